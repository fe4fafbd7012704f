"""img2img and inpainting on tiny-shapes, read back by its detector, per recipe.

    python benchmarks/img2img_inpaint.py [--recipes fp32,int8] [--pairs 64] [--work DIR]

img2img: a held-out prompt's render (detector-exact) is the input; at strength 0.3 with its own prompt
every attribute must survive, at 0.8 with the colour word changed the new colour must appear.
Inpainting: a render with its object in the top left, the bottom-right quadrant masked, a prompt for an
object "in the bottom right": the repainted quadrant alone (on the background) must read as that object,
and the kept half must stay close to the input (mean absolute difference, 0-255). DDIM, 25 steps,
guidance 2 (tiny-shapes' defaults). Prints a table and writes benchmarks/results/img2img_inpaint.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdopt.bench import machine
from sdopt.cli import main as sdopt
from sdopt.runtime.pipeline import Pipeline
from sdopt.tinyshapes.detect import detect, matches
from sdopt.tinyshapes.grammar import COLORS, caption_from, heldout_pairs, parse
from sdopt.tinyshapes.render import BACKGROUND, render

STEPS, GUIDANCE = 25, 2.0


def _other_colour(colour: str) -> str:
    return COLORS[(COLORS.index(colour) + 3) % len(COLORS)]


def measure(folder: Path, pairs: list[tuple[str, int]]) -> dict:
    pipe = Pipeline(folder)
    keep, recolour, inpaint, kept_diff = [], [], [], []
    mask = np.zeros((32, 32), np.uint8)
    mask[16:, 16:] = 255
    for i, (caption, seed) in enumerate(pairs):
        attrs = parse(caption)
        image = render(caption, seed)
        out = pipe(caption, image=image, strength=0.3, seed=i, steps=STEPS, guidance=GUIDANCE).image
        keep.append(all(matches(caption, out).values()))
        new = caption_from(dict(attrs, color=_other_colour(attrs["color"])))
        out = pipe(new, image=image, strength=0.8, seed=i, steps=STEPS, guidance=GUIDANCE).image
        recolour.append(detect(out)["color"] == parse(new)["color"])
        base = render(caption_from(dict(attrs, position="top left")), seed)
        target = caption_from(dict(attrs, position="bottom right", color=_other_colour(attrs["color"])))
        out = pipe(target, image=base, mask=mask, seed=i, steps=STEPS, guidance=GUIDANCE).image
        quadrant = np.full_like(out, BACKGROUND)
        quadrant[16:, 16:] = out[16:, 16:]
        found, wanted = detect(quadrant), parse(target)
        inpaint.append(all(found[k] == wanted[k] for k in ("color", "shape", "position")))
        kept_diff.append(float(np.abs(out[:16].astype(int) - base[:16].astype(int)).mean()))
    return {"img2img_keeps_all_attributes_s0.3": float(np.mean(keep)),
            "img2img_new_colour_s0.8": float(np.mean(recolour)),
            "inpaint_object_in_quadrant": float(np.mean(inpaint)),
            "inpaint_kept_half_mean_abs_diff": float(np.mean(kept_diff)), "pairs": len(pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="fp32,int8")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sdopt-img2img-"))
    pairs = heldout_pairs(args.pairs)
    rows = {}
    for recipe in args.recipes.split(","):
        folder = work / recipe
        if not (folder / "manifest.json").is_file() and sdopt(["compress", "--recipe", recipe, "--out", str(folder)]):
            return 1
        start = time.perf_counter()
        rows[recipe] = {**measure(folder, pairs), "seconds": round(time.perf_counter() - start, 1)}
    print(f"tiny-shapes, {args.pairs} held-out pairs, DDIM {STEPS} steps, guidance {GUIDANCE}")
    print(f"{'recipe':8s} {'img2img keep@0.3':>17s} {'new colour@0.8':>15s} {'inpaint object':>15s} {'kept diff':>10s}")
    for recipe, r in rows.items():
        print(f"{recipe:8s} {r['img2img_keeps_all_attributes_s0.3']:17.1%} {r['img2img_new_colour_s0.8']:15.1%} "
              f"{r['inpaint_object_in_quadrant']:15.1%} {r['inpaint_kept_half_mean_abs_diff']:10.2f}")
    out = Path(__file__).parent / "results" / "img2img_inpaint.json"
    out.write_text(json.dumps({"benchmark": "img2img_inpaint", "command": sys.argv, "rows": rows,
                               "machine": machine()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
