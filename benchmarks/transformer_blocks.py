"""Per-block cost of a DiT artifact's transformer on ONNX Runtime, and the full model's call from it.

    python benchmarks/transformer_blocks.py ARTIFACT [--size 256 512 ...] [--runs 2] [--json FILE]

The transformer graph of an `arch:flux` / `arch:sd3` / `arch:sd35m` artifact holds a few of the real model's
blocks at full width. One generation step through sdopt's runtime records the denoiser's real inputs (the
guided batch of SD3, FLUX's batch 1 with its position ids); a profiling ONNX Runtime session then runs the
graph with them (one warm-up call, then `--runs` calls) and every node's kernel time is charged to the block
its name lies in (`transformer_blocks.N`, `single_transformer_blocks.N`) or to the rest (embedders, the final
layer, the sequence concatenations). The full model's call = rest + mean block time x the real block count
(FLUX.1: 19 double-stream, 38 single-stream; SD3 / SD3.5 medium: 24). Writes JSON (default
benchmarks/results/transformer_blocks_<arch>.json).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdopt.app.bench import machine
from sdopt.contract.artifact import load_manifest
from sdopt.runtime.pipeline import Pipeline

BLOCK = re.compile(r"(single_transformer_blocks|transformer_blocks)\.(\d+)/")
#: diffusers' config key holding each block list's length
COUNT_KEYS = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}


def recorded_feeds(artifact: Path, size: int) -> tuple[Path, dict]:
    """(the denoiser graph's path, the inputs of its first call in a one-step generation at size x size)."""
    pipe = Pipeline(artifact)
    model = pipe.models[pipe.denoiser]
    calls = []
    run = model.run
    model.run = lambda feeds: calls.append(dict(feeds)) or run(feeds)
    pipe("a red circle left of a blue square", steps=1, height=size, width=size)
    return model.path, {k: v for k, v in calls[0].items() if k in model.inputs}


def profile(path: Path, feeds: dict, runs: int) -> list[dict]:
    """Per measured call: {"call": ms, "blocks": {(list, index): ms}, "rest": ms}."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(1 + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    calls = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[1:]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    out = []
    for call in calls:
        blocks, rest = defaultdict(float), 0.0
        for e in nodes:
            if call["ts"] <= e["ts"] <= call["ts"] + call["dur"]:
                match = BLOCK.search(e["name"])
                if match:
                    blocks[(match[1], int(match[2]))] += e["dur"] / 1000
                else:
                    rest += e["dur"] / 1000
        out.append({"call": call["dur"] / 1000, "blocks": dict(blocks), "rest": rest})
    return out


def summary(calls: list[dict], full_counts: dict) -> dict:
    kinds = sorted({kind for c in calls for kind, _ in c["blocks"]})
    per_block = {}
    for kind in kinds:
        times = [ms for c in calls for (k, _), ms in c["blocks"].items() if k == kind]
        per_block[kind] = {"blocks_in_graph": len(times) // len(calls),
                           "ms_per_block": round(statistics.median(times), 2), "full_model_blocks": full_counts.get(kind)}
    rest = statistics.median(c["rest"] for c in calls)
    call = statistics.median(c["call"] for c in calls)
    full = rest + sum(b["ms_per_block"] * (b["full_model_blocks"] or b["blocks_in_graph"]) for b in per_block.values())
    return {"graph_call_ms": round(call, 1), "rest_ms": round(rest, 1), "per_block": per_block,
            "full_model_call_ms": round(full, 1), "kernel_share_of_call": round(
                (rest + sum(sum(c["blocks"].values()) for c in calls) / len(calls)) / call, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="image sides in pixels (default 256)")
    parser.add_argument("--runs", type=int, default=2, help="measured calls per size after one warm-up")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from sdopt.sources.archs import DIT_ARCHS

    manifest = load_manifest(args.artifact, verify=False)
    spec = manifest["source"]["spec"]
    arch = DIT_ARCHS.get(spec.removeprefix("arch:"))
    full_counts = {kind: arch.transformer[key] for kind, key in COUNT_KEYS.items()
                   if arch is not None and key in arch.transformer}
    result = {"artifact": str(args.artifact), "source": spec, "note": manifest["source"].get("note", ""),
              "machine": machine(), "onnxruntime": ort.__version__,
              "runs": args.runs, "sizes": {}}
    for size in args.size:
        path, feeds = recorded_feeds(args.artifact, size)
        row = summary(profile(path, feeds, args.runs), full_counts)
        row["batch"] = int(next(iter(v for k, v in feeds.items() if v.ndim >= 3)).shape[0])
        result["sizes"][str(size)] = row
        blocks = ", ".join(f"{k} {b['ms_per_block']} ms x {b['full_model_blocks']}"
                           for k, b in row["per_block"].items())
        print(f"{size}²: graph call {row['graph_call_ms']} ms (batch {row['batch']}); {blocks}; rest "
              f"{row['rest_ms']} ms -> full model {row['full_model_call_ms'] / 1000:.2f} s per call", flush=True)
    out = args.json or Path("benchmarks/results") / f"transformer_blocks_{spec.removeprefix('arch:')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
