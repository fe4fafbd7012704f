"""UNet latency of several artifacts on ONNX Runtime, in one process, interleaved.

    python benchmarks/unet_latency.py ART_FP32 ART_INT8 [--size 256] [--batch 2] [--runs 7] [--warmup 2]

Each artifact's UNet gets the same inputs (the classifier-free-guidance batch by default). After
warm-up, runs alternate between the artifacts so that machine noise hits all of them alike.
Reports median and spread per artifact and the ratio to the first one; writes JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sdopt.contract.artifact import load_manifest
from sdopt.runtime.backends.onnxruntime import OrtModel


def unet_feeds(manifest: dict, size: int, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    info = manifest["pipeline"]
    latent = size // info["vae_scale_factor"]
    feeds = {}
    for spec in manifest["components"]["unet"]["inputs"]:
        shape = [batch if d == "batch" else latent if d in ("height", "width") else d for d in spec["shape"]]
        feeds[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    feeds["timestep"] = np.full(batch, 500.0, np.float32)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one guided step; default 2)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, help="where to write results (default benchmarks/results/...)")
    args = parser.parse_args()

    models, feeds, labels = [], [], []
    for folder in args.artifacts:
        manifest = load_manifest(folder, verify=False)
        start = time.perf_counter()
        unet = manifest["components"]["unet"]
        models.append(OrtModel(folder / "unet" / "model.onnx", int8_weight_bits=unet.get("int8_weight_bits")))
        load_s = time.perf_counter() - start
        feeds.append(unet_feeds(manifest, args.size, args.batch))
        labels.append({"artifact": str(folder), "recipe": manifest["recipe"]["name"],
                       "source": manifest["source"]["spec"], "random_weights": manifest["source"]["random_weights"],
                       "load_s": round(load_s, 2)})
    for _ in tqdm(range(args.warmup), desc="warm-up"):
        for model, feed in zip(models, feeds):
            model.run(feed)
    times: list[list[float]] = [[] for _ in models]
    for _ in tqdm(range(args.runs), desc="timed runs"):
        for i, (model, feed) in enumerate(zip(models, feeds)):
            start = time.perf_counter()
            model.run(feed)
            times[i].append(time.perf_counter() - start)

    base = statistics.median(times[0])
    rows = []
    for label, t in zip(labels, times):
        median = statistics.median(t)
        rows.append({**label, "median_s": round(median, 4), "min_s": round(min(t), 4), "max_s": round(max(t), 4),
                     "ratio_to_first": round(median / base, 3), "runs": [round(x, 4) for x in t]})
    print(f"UNet, ONNX Runtime CPU, {args.size}x{args.size}, batch {args.batch}, "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    print(f"{'recipe':<24} {'source':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'ratio':>6}")
    for r in rows:
        source = r["source"] + (" (random weights)" if r["random_weights"] else "")
        print(f"{r['recipe']:<24} {source:<28} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['max_s']:>7.3f} "
              f"{r['ratio_to_first']:>6.2f}")
    result = {"benchmark": "unet_latency", "size": args.size, "batch": args.batch, "runs": args.runs,
              "warmup": args.warmup, "machine": {"processor": platform.processor() or platform.machine(),
                                                 "cpus": __import__("os").cpu_count()}, "results": rows}
    write_result(result, args.json or Path(__file__).parent / "results" / f"unet_latency_{args.size}.json")


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
