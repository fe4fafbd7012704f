"""tiny-scenes: sdopt's reference model of two objects and their relation (attribute binding, relations).

Submodules: grammar (captions and held-out scenes), render (pillow renderer), detect (numpy scene reader),
evaluate (prompt alignment, per-attribute and binding-error rates). Trained by
``python -m sdopt.reference.train --family tiny-scenes``; the trained folder ships in
``sdopt/models/tiny_scenes``.
"""
