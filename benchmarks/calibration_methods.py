"""Calibration methods compared at the same bits: what timestep-aware calibration buys.

    python benchmarks/calibration_methods.py [--model tiny-shapes] [--formats int8,fp8,w4a8] [--seeds 4]
                                             [--work DIR] [--calib-num-prompts N] [--calib-steps N]

Each row is `sdopt compress --recipe FORMAT` with one calibration option changed, then `sdopt eval`
against the fp32 export on the same held-out pairs (prompt alignment for tiny-shapes and tiny-scenes,
binding errors for tiny-scenes, PSNR / SSIM / latent cosine vs fp32). Rows: naive (the inputs of one random
step), all steps with max ranges, ModelOpt's min-mean, K = 4 timestep-interval scales, and K = 4 with split
quantizers for the concatenated skip inputs. Prints a table and writes benchmarks/results/calibration_methods.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from sdopt.app.cli import main as sdopt

METHODS = [  # (row, artifact folder, compress options)
    ("naive (one random step)", "naive", ["--calib-sampling", "random-step"]),
    ("all steps, max", "max", []),
    ("all steps, min-mean", "min-mean", ["--calib-aggregation", "min-mean"]),
    ("interval scales K=4", "interval4", ["--calib-intervals", "4"]),
    ("K=4 + split shortcuts", "interval4-split", ["--calib-intervals", "4", "--split-shortcuts"]),
]


def run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sdopt(args)
    if code != 0:
        sys.exit(f"sdopt {' '.join(args)} failed with exit code {code}")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-shapes")
    parser.add_argument("--formats", default="int8,fp8,w4a8", help="comma-separated recipes to compare")
    parser.add_argument("--methods", default=",".join(m[1] for m in METHODS),
                        help="comma-separated rows to run (default: all): " + ", ".join(m[1] for m in METHODS))
    parser.add_argument("--seeds", default="4",
                        help="sdopt eval --seeds (tiny-shapes, tiny-scenes: 64 held-out pairs each)")
    parser.add_argument("--work", type=Path, help="where the artifacts go (default: a temporary folder)")
    parser.add_argument("--calib-num-prompts", default="4")
    parser.add_argument("--calib-steps", help="default: the model's own step count")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "calibration_methods.json")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="sdopt-calibration-"))
    calib = ["--calib-num-prompts", args.calib_num_prompts] + (["--calib-steps", args.calib_steps]
                                                                if args.calib_steps else [])
    rows = []
    for recipe in args.formats.split(","):
        for name, folder, options in METHODS:
            if folder not in args.methods.split(","):
                continue
            out = work / f"{recipe}-{folder}"
            start = time.perf_counter()
            if not (out / "manifest.json").is_file():
                run(["compress", "--model", args.model, "--recipe", recipe, "--out", str(out), *calib, *options])
            seconds = time.perf_counter() - start
            evaluated = work / f"{recipe}-{folder}-eval-{args.seeds}.json"  # a rerun with --work reuses it
            if not evaluated.is_file():
                evaluated.write_text(run(["eval", str(out), "--seeds", args.seeds, "--json"]))
            result = json.loads(evaluated.read_text())
            rows.append({"recipe": recipe, "method": name, "options": " ".join(options),
                         "compress_seconds": round(seconds, 1), **result})

    first = rows[0]
    table = [("fp32", "-", _pct(first.get("reference_alignment")), _pct(first.get("reference_binding_error")),
              "-", "-", "-")]
    table += [(r["recipe"], r["method"], _pct(r.get("alignment")), _pct(r.get("binding_error")), f"{r['psnr']:.2f}",
               f"{r['ssim']:.4f}", f"{r['latent_cosine']:.4f}") for r in rows]
    header = ("recipe", "calibration", "alignment", "binding errors", "PSNR dB", "SSIM", "latent cos")
    widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
    print(f"{args.model}: {first['n_images']} held-out images, {first['scheduler']} {first['steps']} steps, "
          f"guidance {first['guidance']}; calibration {' '.join(calib)}")
    for row in [header] + table:
        print("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "machine": platform.processor() or platform.machine(),
                                     "calibration": calib, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    main()
