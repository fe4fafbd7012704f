"""Prompt alignment of generated tiny-shapes images.

``alignment(captions, images)`` runs the numpy detector on every image and
compares with the caption's attributes.  "alignment" is the fraction of images
whose four attributes (size, color, shape, position) are ALL right;
"per_attribute" is the accuracy of each attribute alone.

``generate(pipe, pairs, ...)`` is a small helper that renders (caption, seed)
pairs with a diffusers StableDiffusionPipeline (one torch.Generator per seed,
so a pair gives the same image whatever the batch it lands in, up to kernel
numerics).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .detect import matches
from .grammar import ATTRIBUTES

#: defaults the fp32 alignment was measured with (see models/tiny_shapes/README.md)
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 5.0
DEFAULT_SCHEDULER = "DDIMScheduler"


def _as_uint8(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.max() <= 1.0 + 1e-6:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.transpose(arr, (1, 2, 0))
    return arr


def alignment(captions: Sequence[str], images: Iterable) -> dict:
    """{"alignment": all-attributes-correct rate, "per_attribute": {attr: rate}, "n": count}.

    ``images``: HxWx3 uint8 arrays, PIL images, or float arrays in [0, 1].
    """
    images = list(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images")
    if not captions:
        raise ValueError("no images")
    per = {a: 0 for a in ATTRIBUTES}
    exact = 0
    for caption, image in zip(captions, images):
        m = matches(caption, _as_uint8(image))
        exact += all(m.values())
        for a in ATTRIBUTES:
            per[a] += bool(m[a])
    n = len(captions)
    return {"alignment": exact / n, "per_attribute": {a: per[a] / n for a in ATTRIBUTES}, "n": n}


def generate(pipe, pairs, num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
             batch_size: int = 32, progress: bool = False) -> list[np.ndarray]:
    """Generate one image per (caption, seed) pair with a StableDiffusionPipeline -> uint8 arrays."""
    import torch

    pairs = list(pairs)
    out: list[np.ndarray] = []
    it = range(0, len(pairs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="generate", unit="batch")
    for i in it:
        chunk = pairs[i:i + batch_size]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for _, s in chunk]
        res = pipe([c for c, _ in chunk], generator=gens, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, output_type="np")
        out += [_as_uint8(im) for im in res.images]
    return out


__all__ = ["alignment", "generate", "DEFAULT_STEPS", "DEFAULT_GUIDANCE", "DEFAULT_SCHEDULER"]
