"""Feature-caching schedules on a reference model, with the DeepCache package in the same run as the reference.

    python benchmarks/cache_methods.py [--model tiny-shapes|tiny-scenes] [--pairs 64] [--branch 0]
        [--thresholds 0.05,0.08] [--work DIR] [--json PATH]

For the uncached fp32 artifact and the `cache` artifact under each schedule (uniform N = 2, 3, 5; DeepCache's
non-uniform schedule at N = 3; the adaptive one at each threshold, capped at 5 steps): full and shallow UNet
evaluations per image, UNet time and end-to-end time per image (ONNX Runtime, median), prompt alignment on
the held-out pairs and PSNR / SSIM vs the uncached images. DeepCache itself (`DeepCacheSDHelper` on the
diffusers pipeline in torch, same model, noise, interval and branch) runs the uniform schedules: PSNR of its
images vs diffusers uncached and vs sdopt's. DDIM, 25 steps, guidance 2 (both families' defaults). Prints a table
and writes benchmarks/results/cache_methods.json (tiny-shapes) or cache_methods_tiny_scenes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdopt.app.bench import machine
from sdopt.app.cli import main as sdopt
from sdopt.app.evaluate import psnr, ssim
from sdopt.contract.graphs import is_denoiser
from sdopt.reference.families import FAMILIES, headline
from sdopt.runtime.pipeline import Pipeline

STEPS, GUIDANCE, SIZE = 25, 2.0, 32


def generate(folder: Path, pairs, overrides: dict | None = None) -> dict:
    pipe = Pipeline(folder, denoise_overrides=overrides)
    unet_time = []
    for name, model in pipe.models.items():
        if is_denoiser(pipe.roles[name]):
            model.run = _timed(model.run, unet_time)
    images, unet, total, stats = [], [], [], []
    for prompt, seed in pairs:
        unet_time.clear()
        start = time.perf_counter()
        result = pipe(prompt, seed=seed, steps=STEPS, guidance=GUIDANCE)
        total.append(time.perf_counter() - start)
        unet.append(sum(unet_time))
        images.append(result.image)
        stats.append(result.stats)
    return {"images": images, "unet_s": statistics.median(unet), "end_to_end_s": statistics.median(total),
            "full": float(np.mean([s["full"] for s in stats])),
            "shallow": float(np.mean([s.get("shallow", 0) for s in stats]))}


def _timed(run, into: list):
    def timed(feeds):
        start = time.perf_counter()
        try:
            return run(feeds)
        finally:
            into.append(time.perf_counter() - start)
    return timed


def matched_threshold(folder: Path, pairs, target_full: float, cap: int) -> float:
    """The adaptive threshold whose mean full evaluations per image come closest to `target_full` (bisection on
    a log scale over 16 of the pairs: the count falls as the threshold rises)."""
    low, high, best = np.log(1e-3), np.log(1.0), (float("inf"), 0.05)
    for _ in range(10):
        middle = (low + high) / 2
        full = generate(folder, pairs[:16], {"schedule": "adaptive", "threshold": float(np.exp(middle)),
                                             "interval": cap})["full"]
        best = min(best, (abs(full - target_full), float(np.exp(middle))))
        low, high = (middle, high) if full > target_full else (low, middle)
    return round(best[1], 4)


def deepcache_images(model: str, pairs, noise, interval: int | None, branch: int) -> list[np.ndarray]:
    """diffusers' pipeline in torch on the runtime's noise; with DeepCache's helper when `interval` is set."""
    import torch
    from DeepCache import DeepCacheSDHelper

    from sdopt.sources.source import load_source

    pipe = load_source(model).pipeline
    helper = None
    if interval is not None:
        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=branch)
        helper.enable()
    images = []
    try:
        for prompt, seed in pairs:
            with torch.no_grad():
                out = pipe(prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE, width=SIZE,
                           latents=torch.from_numpy(noise(seed, SIZE, SIZE)), output_type="np").images[0]
            images.append((out * 255).round().astype(np.uint8))
    finally:
        if helper is not None:
            helper.disable()
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(FAMILIES), default="tiny-shapes")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--branch", type=int, default=0)
    parser.add_argument("--thresholds", default="0.05,0.08")
    parser.add_argument("--match", type=int, default=3,
                        help="also the adaptive threshold that matches uniform N=MATCH's full evaluations")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/cache_methods[_tiny_scenes].json")
    args = parser.parse_args()
    family = FAMILIES[args.model]
    work = args.work or Path(tempfile.mkdtemp(prefix="sdopt-cache-"))
    pairs = family.heldout_pairs(args.pairs)
    captions = [p for p, _ in pairs]
    folders = {"fp32": work / "fp32", "cache": work / f"cache-b{args.branch}"}
    for recipe, folder in folders.items():
        extra = ["--set", f"cache.branch={args.branch}"] if recipe == "cache" else []
        if not (folder / "manifest.json").is_file() and \
                sdopt(["compress", "--model", args.model, "--recipe", recipe, *extra, "--out", str(folder)]):
            return 1

    methods = {"uncached": (folders["fp32"], None, None)}
    for n in (2, 3, 5):
        methods[f"uniform N={n}"] = (folders["cache"], {"schedule": "uniform", "interval": n}, n)
    methods["nonuniform N=3"] = (folders["cache"], {"schedule": "nonuniform", "interval": 3}, None)
    for threshold in (float(t) for t in args.thresholds.split(",")):
        methods[f"adaptive t={threshold:g}"] = (folders["cache"], {"schedule": "adaptive", "threshold": threshold,
                                                                  "interval": 5}, None)
    matched = matched_threshold(folders["cache"], pairs, len(range(0, STEPS, args.match)), 5)
    methods[f"adaptive t={matched:g} (= N={args.match})"] = (folders["cache"], {
        "schedule": "adaptive", "threshold": matched, "interval": 5}, None)
    rows, reference = {}, None
    noise = Pipeline(folders["fp32"]).initial_noise  # the runtime's noise, given to diffusers too
    torch_uncached = deepcache_images(args.model, pairs, noise, None, args.branch)
    for label, (folder, overrides, deepcache_interval) in methods.items():
        r = generate(folder, pairs, overrides)
        images = r.pop("images")
        reference = reference if reference is not None else images
        row = {**r, **headline(family.alignment(captions, images)),
               "psnr_vs_uncached": float(np.mean([min(psnr(a, b), 100) for a, b in zip(images, reference)])),
               "ssim_vs_uncached": float(np.mean([ssim(a, b) for a, b in zip(images, reference)]))}
        if deepcache_interval is not None:
            theirs = deepcache_images(args.model, pairs, noise, deepcache_interval, args.branch)
            row["deepcache_psnr_vs_uncached"] = float(np.mean([min(psnr(a, b), 100)
                                                               for a, b in zip(theirs, torch_uncached)]))
            row["sdopt_psnr_vs_deepcache"] = float(np.mean([min(psnr(a, b), 100) for a, b in zip(images, theirs)]))
            row["deepcache_alignment"] = family.alignment(captions, theirs)["alignment"]
        rows[label] = row
        print(f"{label}: {json.dumps({k: round(v, 4) for k, v in row.items()})}", file=sys.stderr)

    print(f"{args.model}, {args.pairs} held-out pairs, DDIM {STEPS} steps, guidance {GUIDANCE}, branch {args.branch}, "
          f"ONNX Runtime; {machine().get('processor')}")
    print(f"{'schedule':26s} {'full':>5s} {'shallow':>7s} {'UNet ms':>8s} {'total ms':>8s} {'align':>6s} "
          f"{'PSNR dB':>7s} {'SSIM':>6s} {'DeepCache PSNR':>14s} {'vs DeepCache':>12s}")
    for label, r in rows.items():
        dc = (f"{r['deepcache_psnr_vs_uncached']:14.2f} {r['sdopt_psnr_vs_deepcache']:12.2f}"
              if "deepcache_psnr_vs_uncached" in r else f"{'-':>14s} {'-':>12s}")
        print(f"{label:26s} {r['full']:5.1f} {r['shallow']:7.1f} {1000 * r['unet_s']:8.1f} "
              f"{1000 * r['end_to_end_s']:8.1f} {r['alignment']:6.1%} {r['psnr_vs_uncached']:7.2f} "
              f"{r['ssim_vs_uncached']:6.4f} {dc}")
    out = args.json or Path(__file__).parent / "results" / family.result_file("cache_methods")
    out.write_text(json.dumps({"benchmark": "cache_methods", "command": sys.argv, "model": args.model,
                               "pairs": args.pairs, "steps": STEPS, "guidance": GUIDANCE, "branch": args.branch,
                               "rows": rows, "machine": machine()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
