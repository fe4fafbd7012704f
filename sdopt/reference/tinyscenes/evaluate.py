"""Prompt alignment of generated tiny-scenes images.

``alignment(captions, images)`` reads every image with the detector and compares the scene with the
caption's:

- "alignment": the whole scene right (both objects' size, colour and shape, the relation, the background);
- "per_attribute": size, colour and shape over all objects the captions ask for (a missing object counts
  wrong), "count" (as many objects as asked), "relation" (right axis and order), "background";
- "binding_error": share of images whose colours and shapes are the ones asked for but paired with the
  wrong objects ("a red circle and a blue square" drawn as a blue circle and a red square).

Detected objects are matched to the caption's by the pairing that agrees on more attributes (the caption's
order on a tie): a scene with its objects swapped reads as a relation error, not as six attribute errors.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from sdopt.reference.tinyscenes.detect import detect
from sdopt.reference.tinyscenes.grammar import OBJECT_ATTRIBUTES, parse
from sdopt.reference.tinyshapes.evaluate import as_uint8

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 2.0
ATTRIBUTES = OBJECT_ATTRIBUTES + ("count", "relation", "background")


def _agreement(want, got) -> int:
    return sum(w == g for a, b in zip(want, got) for w, g in zip(a, b))


def score(caption: str, image) -> dict:
    """Per attribute right or wrong for one image, plus "scene" (all right) and "binding_error"."""
    want = parse(caption)
    got = detect(as_uint8(image))
    found = got.objects if got else ()
    count_ok = len(found) == len(want.objects)
    swapped = count_ok and len(found) == 2 and _agreement(want.objects, found[::-1]) > _agreement(want.objects,
                                                                                                   found)
    matched = found[::-1] if swapped else found
    result = {name: sum(w[k] == g[k] for w, g in zip(want.objects, matched)) / len(want.objects)
              for k, name in enumerate(OBJECT_ATTRIBUTES)}
    result["count"] = float(count_ok)
    result["relation"] = float(count_ok and not swapped and (want.axis is None or got.axis == want.axis))
    result["background"] = float(got is not None and got.background == want.background)
    result["scene"] = float(got == want)
    same_values = count_ok and all(sorted(o[k] for o in found) == sorted(o[k] for o in want.objects) for k in (1, 2))
    bound = sorted((o[1], o[2]) for o in found) == sorted((o[1], o[2]) for o in want.objects)
    result["binding_error"] = float(same_values and not bound)
    return result


def alignment(captions: Sequence[str], images: Iterable) -> dict:
    """{"alignment", "per_attribute": {attribute: rate}, "binding_error", "n"} over caption/image pairs."""
    images = list(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images")
    if not captions:
        raise ValueError("no images")
    scores = [score(c, im) for c, im in zip(captions, images)]
    n = len(scores)
    return {"alignment": sum(s["scene"] for s in scores) / n,
            "per_attribute": {a: sum(s[a] for s in scores) / n for a in ATTRIBUTES},
            "binding_error": sum(s["binding_error"] for s in scores) / n, "n": n}


__all__ = ["alignment", "score", "ATTRIBUTES", "DEFAULT_STEPS", "DEFAULT_GUIDANCE"]
