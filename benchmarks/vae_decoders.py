"""VAE decoding of one image on ONNX Runtime: the tiny decoder of a tiny-vae artifact against the model's full
decoder, whole and in tiles. Each mode runs in a process of its own (its peak memory is its own), decoding the
same latents: latency median of --runs after a warm-up, RSS after loading and peak RSS, and PSNR of each image
against the full decoder's whole decode.

    python benchmarks/vae_decoders.py ARTIFACT [--size 512] [--tile 256] [--runs 5] [--json FILE]

ARTIFACT must hold vae_decoder (tiny) and vae_decoder_full (a tiny-vae artifact with keep_full).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdopt.contract.graphs import IMAGE_IO, LATENT_INPUT

MODES = {"tiny": ("vae_decoder", 0), "full": ("vae_decoder_full", 0), "full-tiled": ("vae_decoder_full", None)}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(artifact: Path, mode: str, size: int, tile: int, runs: int, out: Path) -> None:
    from sdopt.contract.artifact import load_manifest
    from sdopt.runtime.backends.onnxruntime import OrtModel
    from sdopt.runtime.tiling import decode_tiled

    manifest = load_manifest(artifact, verify=False)
    info = manifest["pipeline"]
    component, tiled = MODES[mode]
    model = OrtModel(artifact / component / "model.onnx")
    factor = info["vae_scale_factor"]
    latent = size // factor
    z = np.random.default_rng(0).standard_normal((1, info["latent_channels"], latent, latent)).astype(np.float32)
    z /= np.float32(info["vae_scaling_factor"])  # what the runtime hands the decoder

    def decode(part):
        return model.run({LATENT_INPUT[0]: part})[IMAGE_IO[0]]

    def once():
        return decode_tiled(decode, z, tile // factor, factor) if tiled is None else decode(z)

    loaded = rss_bytes()
    once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        image = once()
        times.append(time.perf_counter() - start)
    np.save(out.with_suffix(".npy"), image)
    out.write_text(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                               "rss_after_load_bytes": loaded,
                               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    x, y = (np.clip(v[0].transpose(1, 2, 0) / 2 + 0.5, 0, 1) * 255 for v in (a, b))
    mse = float(np.mean((x.round() - y.round()) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels for full-tiled")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/vae_decoders.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.artifact, args.worker, args.size, args.tile, args.runs, args.out)
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = Path(tmp) / f"{mode}.json"
            subprocess.run([sys.executable, __file__, str(args.artifact), "--worker", mode, "--size", str(args.size),
                            "--tile", str(args.tile), "--runs", str(args.runs), "--out", str(out)], check=True)
            rows[mode] = json.loads(out.read_text())
            rows[mode]["image"] = np.load(out.with_suffix(".npy"))
    reference = rows["full"]["image"]
    for mode, row in rows.items():
        image = row.pop("image")
        row["psnr_vs_full_db"] = None if mode == "full" else psnr(image, reference)
        row["speedup_vs_full"] = rows["full"]["median_s"] / row["median_s"]
    manifest = json.loads((args.artifact / "manifest.json").read_text())
    result = {"benchmark": "vae_decoders", "artifact": str(args.artifact), "source": manifest["source"]["spec"],
              "size": args.size, "tile": args.tile, "runs": args.runs, "machine": _machine(),
              "tiny_parameters": next(r for r in manifest["passes"] if r["pass"] == "tiny-vae")["parameters"],
              "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['source']}, {args.size}x{args.size}, ONNX Runtime, median of {args.runs}; "
          f"{result['machine'].get('processor')} {','.join(result['machine'].get('isa', []))}")
    print(f"{'decoder':<12} {'median s':>9} {'x full':>7} {'RSS load GB':>12} {'peak RSS GB':>12} {'PSNR dB':>8}")
    for mode, row in rows.items():
        print(f"{mode:<12} {row['median_s']:>9.3f} {row['speedup_vs_full']:>7.1f} "
              f"{row['rss_after_load_bytes'] / 1e9:>12.2f} {row['peak_rss_bytes'] / 1e9:>12.2f} "
              f"{'-' if row['psnr_vs_full_db'] is None else format(row['psnr_vs_full_db'], '.2f'):>8}")
    print(f"wrote {args.json}")


def _machine() -> dict:
    from sdopt.app.bench import machine

    return machine()


if __name__ == "__main__":
    main()
