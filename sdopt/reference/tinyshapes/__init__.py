"""tiny-shapes: the project's own tiny text-to-image latent diffusion model.

Submodules: grammar (captions), render (pillow renderer), detect (numpy
attribute detector), evaluate (prompt alignment), train (training script).
The trained diffusers folder ships in ``sdopt/models/tiny_shapes``.
"""

from pathlib import Path

#: the shipped StableDiffusionPipeline folder
MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny_shapes"

__all__ = ["MODEL_DIR"]
