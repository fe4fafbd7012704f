"""The few-step recipes with their defaults, over several distillation seeds: how much prompt alignment `lcm` and
`lcm+int8+tiny-vae` lose against the fp32 model at its own sampling, per seed, with mean and worst.

    python benchmarks/fewstep_seeds.py [--model tiny-shapes] [--seeds 0,1,2] [--work DIR] [--jobs N] [--json FILE]

For each seed S it runs, as a user would (nothing but the seed set):

    sdopt compress --model M --recipe lcm --set lcm.seed=S --out WORK/lcm-S
    sdopt eval WORK/lcm-S --json
    sdopt compress --model M --recipe lcm+int8+tiny-vae --set lcm.seed=S --set tiny-vae.seed=S --out WORK/lcm-int8-tiny-vae-S
    sdopt eval WORK/lcm-int8-tiny-vae-S --json          (and --vae full: the tiny decoder's share)

The composition resumes the lcm distillation of the same seed from its checkpoint. `--jobs 2` runs two seeds'
compressions at once with one thread each (evaluations run alone). Writes the JSON (default
benchmarks/results/fewstep_seeds[_FAMILY].json) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {"lcm": [], "lcm+int8+tiny-vae": ["--set", "tiny-vae.seed={seed}"]}
TARGETS = {"lcm": 3.0, "lcm+int8+tiny-vae": 5.0}  # points of alignment a recipe may lose with its defaults


def sdopt(argv: list[str], threads: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    print("+ sdopt " + " ".join(argv), file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "sdopt.app.cli", *argv], env=env, stdout=subprocess.PIPE, text=True,
                          check=True)


def compress(model: str, recipe: str, seed: int, out: Path, threads: int | None) -> float:
    if (out / "manifest.json").is_file():
        return 0.0
    start = time.perf_counter()
    extra = [a.format(seed=seed) for a in RECIPES[recipe]]
    sdopt(["compress", "--model", model, "--recipe", recipe, "--set", f"lcm.seed={seed}", *extra, "--out",
           str(out)], threads)
    return time.perf_counter() - start


def evaluate(folder: Path, *flags: str) -> dict:
    result = json.loads(sdopt(["eval", str(folder), "--json", *flags]).stdout)
    keep = ("alignment", "reference_alignment", "per_attribute", "binding_error", "psnr", "ssim", "images_per_s",
            "reference_images_per_s", "steps", "scheduler", "n_images")
    return {k: result[k] for k in keep if k in result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-shapes")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("work/fewstep-seeds"))
    parser.add_argument("--jobs", type=int, default=1, help="seeds compressed at once, one thread each when > 1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from sdopt.reference.families import family

    reference = family(args.model)
    if reference is None:
        parser.error(f"--model {args.model}: a reference model (tiny-shapes, tiny-scenes) is needed to read alignment")
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = 1 if args.jobs > 1 else None
    out = args.json or Path(__file__).parent / "results" / reference.result_file("fewstep_seeds")
    rows = []
    for recipe in RECIPES:
        folders = {s: args.work / f"{recipe.replace('+', '-')}-{s}" for s in seeds}
        with ThreadPoolExecutor(args.jobs) as pool:
            seconds = dict(zip(seeds, pool.map(lambda s: compress(args.model, recipe, s, folders[s], threads), seeds)))
        for s in seeds:
            manifest = json.loads((folders[s] / "manifest.json").read_text())
            row = {"recipe": recipe, "seed": s, "compress_s": round(seconds[s], 1),
                   "passes": [{k: r.get(k) for k in ("pass", "train_steps", "latents", "heldout_psnr_db")}
                              for r in manifest["passes"]], **evaluate(folders[s])}
            if "tiny-vae" in recipe:
                row["full_decoder"] = evaluate(folders[s], "--vae", "full")
            row["points_lost"] = round(100 * (row["reference_alignment"] - row["alignment"]), 2)
            rows.append(row)
            print(f"{recipe} seed {s}: {row['alignment']:.1%} (fp32 {row['reference_alignment']:.1%}), "
                  f"{row['points_lost']} points lost", file=sys.stderr)
    summary = {}
    for recipe, target in TARGETS.items():
        lost = [r["points_lost"] for r in rows if r["recipe"] == recipe]
        summary[recipe] = {"points_lost_mean": round(statistics.mean(lost), 2), "points_lost_worst": max(lost),
                           "target_points": target, "holds": max(lost) <= target}
    result = {"benchmark": "fewstep_seeds", "model": args.model, "seeds": seeds, "rows": rows, "summary": summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| recipe | seed | alignment | fp32 | points lost | full decoder |\n|---|---|---|---|---|---|")
    for r in rows:
        full = f"{r['full_decoder']['alignment']:.1%}" if "full_decoder" in r else "-"
        print(f"| `{r['recipe']}` | {r['seed']} | {r['alignment']:.1%} | {r['reference_alignment']:.1%} | "
              f"{r['points_lost']} | {full} |")
    for recipe, s in summary.items():
        print(f"{recipe}: mean {s['points_lost_mean']} points lost, worst {s['points_lost_worst']} "
              f"(target {s['target_points']}): {'holds' if s['holds'] else 'does not hold'}")


if __name__ == "__main__":
    main()
