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

from sdopt.reference.tinyshapes.detect import matches
from sdopt.reference.tinyshapes.grammar import ATTRIBUTES

#: defaults the fp32 alignment was measured with (see models/tiny_shapes/README.md)
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 2.0
DEFAULT_SCHEDULER = "DDIMScheduler"


def as_uint8(image) -> np.ndarray:
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
        m = matches(caption, as_uint8(image))
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
        out += [as_uint8(im) for im in res.images]
    return out


__all__ = ["alignment", "generate", "load_pipeline", "DEFAULT_STEPS", "DEFAULT_GUIDANCE", "DEFAULT_SCHEDULER"]


def load_pipeline(model_dir=None, scheduler: str | None = None):
    """The shipped tiny-shapes folder (or the given one) as its diffusers pipeline, offline, with `scheduler` (a
    diffusers class name; default: DDIM for SD 1.x folders, the folder's own for the others)."""
    import json
    from pathlib import Path

    import diffusers

    from sdopt.reference.tinyshapes import MODEL_DIR
    from sdopt.contract.pipeline_folder import pretrained_options

    folder = Path(model_dir or MODEL_DIR)
    index = json.loads((folder / "model_index.json").read_text())
    pipeline_class = index["_class_name"]
    options = pretrained_options(index)
    pipe = getattr(diffusers, pipeline_class).from_pretrained(str(folder), local_files_only=True, **options)
    if scheduler is None and pipeline_class == "StableDiffusionPipeline":
        scheduler = DEFAULT_SCHEDULER
    if scheduler is not None and type(pipe.scheduler).__name__ != scheduler:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv=None) -> int:
    """python -m sdopt.reference.tinyshapes.evaluate [--family F] [--model DIR] [--n 256] [--steps 25] [--guidance 2]"""
    import argparse
    import json
    import time
    from pathlib import Path

    from sdopt.reference.families import FAMILIES

    p = argparse.ArgumentParser(prog="python -m sdopt.reference.tinyshapes.evaluate",
                                description="prompt alignment of a reference-family pipeline (diffusers) on its "
                                            "held-out pairs")
    p.add_argument("--family", choices=tuple(FAMILIES), default="tiny-shapes")
    p.add_argument("--model", default=None, help="pipeline folder (default: the family's shipped model)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--validation", action="store_true",
                   help="training combinations with unseen seeds instead of the held-out set (for choosing "
                        "sampling defaults; tiny-scenes)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's (its family marker file)")
    p.add_argument("--guidance", type=lambda v: [float(g) for g in v.split(",")], default=None,
                   metavar="G[,G...]", help="guidance scale; several give one result each (default: the model's)")
    p.add_argument("--scheduler", default=None,
                   help=f"a diffusers scheduler class (default: {DEFAULT_SCHEDULER} for SD 1.x folders, else the "
                        "folder's own)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-grid", default=None, help="write a PNG grid of the first 64 images here (the last guidance)")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]
    folder = Path(args.model or family.model_dir)
    marker = json.loads((folder / family.marker).read_text())
    args.steps = args.steps or marker["steps"]
    args.guidance = args.guidance or [float(marker["guidance"])]
    pipe = load_pipeline(folder, args.scheduler)
    args.scheduler = type(pipe.scheduler).__name__
    grammar = family.module("grammar")
    if args.validation and not hasattr(grammar, "validation_pairs"):
        p.error(f"{family.name} has no validation set")
    pairs = grammar.validation_pairs(args.n) if args.validation else family.heldout_pairs(args.n)
    results = []
    for guidance in args.guidance:
        t = time.time()
        images = generate(pipe, pairs, args.steps, guidance, args.batch_size, progress=True)
        res = family.alignment([c for c, _ in pairs], images)
        res.update(steps=args.steps, guidance=guidance, scheduler=args.scheduler, seconds=round(time.time() - t, 1))
        print(json.dumps(res, indent=2), flush=True)
        results.append(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results[0] if len(results) == 1 else results, f, indent=2)
    if args.save_grid:
        from PIL import Image

        k = min(64, len(images))
        cols = 8
        rows = (k + cols - 1) // cols
        h, w = images[0].shape[:2]
        grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
        for i in range(k):
            grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = images[i]
        Image.fromarray(grid).resize((cols * w * 4, rows * h * 4), Image.NEAREST).save(args.save_grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
