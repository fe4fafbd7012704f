"""img2img and inpainting on a reference model, read back by its detector, per recipe.

    python benchmarks/img2img_inpaint.py [--model tiny-shapes|tiny-scenes] [--recipes fp32,int8] [--pairs 64]
                                         [--work DIR]

tiny-shapes: a held-out prompt's render (detector-exact) is the input; at strength 0.3 with its own prompt
every attribute must survive, at 0.8 with the colour word changed the new colour must appear.
Inpainting: a render with its object in the top left, the bottom-right quadrant masked, a prompt for an
object "in the bottom right": the repainted quadrant alone (on the background) must read as that object,
and the kept half must stay close to the input (mean absolute difference, 0-255).
tiny-scenes: the same with two objects, and every edit is a binding test. At 0.3 with its own prompt the
whole scene must survive; at 0.8 the second object's colour word is changed (to one neither object has) and
the new scene must appear with each colour on its own object; inpainting masks the second object's half
(right or bottom) and asks for the same recoloured scene: the whole image must read as it, the first
object's half kept. Binding errors (the two colours on the wrong objects) are counted separately.
DDIM, 25 steps, guidance 2 (the models' defaults). Prints a table and writes
benchmarks/results/img2img_inpaint[_tiny_scenes].json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdopt.app.bench import machine
from sdopt.app.cli import main as sdopt
from sdopt.reference.families import FAMILIES
from sdopt.reference.tinyscenes import evaluate as scenes_evaluate
from sdopt.reference.tinyscenes import grammar as scenes_grammar
from sdopt.reference.tinyscenes import render as scenes_render
from sdopt.reference.tinyshapes.detect import detect, matches
from sdopt.reference.tinyshapes.grammar import COLORS, caption_from, parse
from sdopt.reference.tinyshapes.render import BACKGROUND, render
from sdopt.runtime.pipeline import Pipeline

STEPS, GUIDANCE = 25, 2.0


def _other_colour(colour: str) -> str:
    return COLORS[(COLORS.index(colour) + 3) % len(COLORS)]


def measure_shapes(pipe: Pipeline, pairs: list[tuple[str, int]]) -> dict:
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


def _second_recoloured(scene: scenes_grammar.Scene) -> scenes_grammar.Scene:
    taken = {o[1] for o in scene.objects}
    colour = next(c for c in COLORS[3:] + COLORS[:3] if c not in taken)
    size, _, shape = scene.objects[1]
    return scenes_grammar.Scene((scene.objects[0], (size, colour, shape)), scene.axis, scene.background)


HALVES = {"horizontal": (np.s_[:, :16], np.s_[:, 16:]), "vertical": (np.s_[:16], np.s_[16:])}  # first, second object


def measure_scenes(pipe: Pipeline, pairs: list[tuple[str, int]]) -> dict:
    keep, recolour, inpaint, kept_diff = [], [], [], []
    for i, (caption, seed) in enumerate(pairs):
        scene = scenes_grammar.parse(caption)
        image = scenes_render.render(caption, seed)
        out = pipe(caption, image=image, strength=0.3, seed=i, steps=STEPS, guidance=GUIDANCE).image
        keep.append(scenes_evaluate.score(caption, out)["scene"])
        new = _second_recoloured(scene).caption()
        out = pipe(new, image=image, strength=0.8, seed=i, steps=STEPS, guidance=GUIDANCE).image
        recolour.append(scenes_evaluate.score(new, out))
        first_half, second_half = HALVES[scene.axis]
        mask = np.zeros((32, 32), np.uint8)
        mask[second_half] = 255
        out = pipe(new, image=image, mask=mask, seed=i, steps=STEPS, guidance=GUIDANCE).image
        inpaint.append(scenes_evaluate.score(new, out))
        kept_diff.append(float(np.abs(out[first_half].astype(int) - image[first_half].astype(int)).mean()))
    return {"img2img_keeps_scene_s0.3": float(np.mean(keep)),
            "img2img_second_object_recoloured_s0.8": float(np.mean([r["scene"] for r in recolour])),
            "img2img_binding_error_s0.8": float(np.mean([r["binding_error"] for r in recolour])),
            "inpaint_second_object_recoloured": float(np.mean([r["scene"] for r in inpaint])),
            "inpaint_binding_error": float(np.mean([r["binding_error"] for r in inpaint])),
            "inpaint_kept_half_mean_abs_diff": float(np.mean(kept_diff)), "pairs": len(pairs)}


MEASURES = {"tiny-shapes": measure_shapes, "tiny-scenes": measure_scenes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MEASURES), default="tiny-shapes")
    parser.add_argument("--recipes", default="fp32,int8")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sdopt-img2img-"))
    family = FAMILIES[args.model]
    pairs = family.heldout_pairs(args.pairs)
    rows = {}
    for recipe in args.recipes.split(","):
        folder = work / recipe
        if not (folder / "manifest.json").is_file() and sdopt(["compress", "--model", args.model, "--recipe",
                                                                recipe, "--out", str(folder)]):
            return 1
        start = time.perf_counter()
        found = MEASURES[args.model](Pipeline(folder), pairs)
        rows[recipe] = {**found, "seconds": round(time.perf_counter() - start, 1)}
    print(f"{args.model}, {args.pairs} held-out pairs, DDIM {STEPS} steps, guidance {GUIDANCE}")
    print(f"{'':40s}" + "".join(f"{recipe:>10s}" for recipe in rows))
    for key in next(iter(rows.values())):
        cells = (f"{r[key]:10g}" if key in ("pairs", "seconds") else f"{r[key]:10.2f}" if "diff" in key
                 else f"{r[key]:10.1%}" for r in rows.values())
        print(f"{key:40s}" + "".join(cells))
    out = Path(__file__).parent / "results" / family.result_file("img2img_inpaint")
    out.write_text(json.dumps({"benchmark": "img2img_inpaint", "command": sys.argv, "model": args.model,
                               "rows": rows, "machine": machine()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
