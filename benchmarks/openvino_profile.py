"""Where an artifact's denoiser step spends its time on OpenVINO: per-layer performance counters, grouped by
operation and by the precision the CPU plugin ran it in (the suffix of OpenVINO's `exec_type`: I8 / U8 for
integer kernels, BF16 for AMX or AVX-512 bf16, FP32), beside the step's wall time.

    python benchmarks/openvino_profile.py ART_FP32 ART_INT8 [--size 512] [--batch 2] [--runs 3] [--top 12]

Each artifact's denoiser is compiled as `sdopt run --backend openvino` compiles it: its OpenVINO build when
`sdopt build --format openvino` made one (the IR with uint8 activations), else its ONNX graph, with OpenVINO's
default precision (bf16 on AMX and AVX-512 bf16 CPUs: that is the `openvino` peer of `sdopt bench`).
`--precision` forces one (fp32 / bf16). Inputs are the classifier-free-guidance batch of one step at
t = 500. Reports the median step over `--runs` after one warm-up, then one profiled step; writes JSON
(default benchmarks/results/openvino_profile_<size>.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

from unet_latency import unet_feeds, write_result

from sdopt.contract.artifact import load_manifest
from sdopt.contract.manifest import GRAPH_FOLDER_BUILDS

PRECISION = re.compile(r"_(I8|U8|BF16|FP16|F16|FP32|F32|I32)$", re.IGNORECASE)


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    isa = [f for f in ("amx_int8", "amx_bf16", "avx512_vnni", "avx512_bf16", "avx_vnni", "avx2") if f" {f}" in info]
    return f"{model} ({', '.join(isa)})"


def denoiser_graph(folder: Path, manifest: dict) -> tuple[Path, str]:
    ir = folder / "unet" / GRAPH_FOLDER_BUILDS["openvino"][0]
    if "openvino" in manifest.get("builds", {}) and ir.is_file():
        return ir, "openvino build (IR)"
    return folder / "unet" / "model.onnx", "ONNX graph"


def precision_of(exec_type: str) -> str:
    match = PRECISION.search(exec_type)
    return {"F32": "FP32", "F16": "FP16"}.get(match.group(1).upper(), match.group(1).upper()) if match else "other"


PARTS = (  # (part, test on (node name, node type)), first match wins
    ("attention core (QK^T, softmax, AV; eltwise fused into it)", lambda name, kind: "/attn" in name and kind in (
        "Subgraph", "MatMul", "Softmax", "ScaledDotProductAttention") and "/to_" not in name),
    ("convolutions", lambda name, kind: kind == "Convolution"),
    ("linear layers", lambda name, kind: kind.startswith("FullyConnected") or kind == "MatMul"),
    ("layout (Reorder, Transpose, Split, Concat, Reshape)", lambda name, kind: kind in (
        "Reorder", "Transpose", "VariadicSplit", "Split", "Concatenation", "Reshape")),
    ("normalization (GroupNorm, LayerNorm)", lambda name, kind: kind in ("MVN", "GroupNormalization")),
)


def part_of(name: str, kind: str) -> str:
    return next((part for part, test in PARTS if test(name, kind)), "other (activations, eltwise)")


def profile(folder: Path, args, core) -> dict:
    manifest = load_manifest(folder, verify=False)
    path, form = denoiser_graph(folder, manifest)
    feeds = unet_feeds(manifest, args.size, args.batch)
    config = {"INFERENCE_NUM_THREADS": args.threads}
    if args.precision:
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[args.precision]
    model = core.read_model(str(path))
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    start = time.perf_counter()
    compiled = core.compile_model(model, "CPU", config)
    compile_s = time.perf_counter() - start
    request = compiled.create_infer_request()
    request.infer(feeds)  # warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        request.infer(feeds)
        times.append(time.perf_counter() - start)
    del request, compiled
    profiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": "YES"})
    request = profiled.create_infer_request()
    request.infer(feeds)
    request.infer(feeds)
    layers = [(info.node_name, info.node_type, info.exec_type, info.real_time.total_seconds() * 1e3)
              for info in request.get_profiling_info() if info.status.name == "EXECUTED"]
    by_kind: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    by_precision: dict[str, float] = defaultdict(float)
    by_part: dict[str, float] = defaultdict(float)
    for name, node_type, exec_type, ms in layers:
        precision = precision_of(exec_type)
        by_part[part_of(name, node_type)] += ms
        entry = by_kind[(node_type, precision)]
        entry[0] += 1
        entry[1] += ms
        by_precision[precision] += ms
    total = sum(ms for *_, ms in layers)
    return {
        "artifact": str(folder), "recipe": manifest["recipe"]["name"], "graph": form,
        "fake_quantize_nodes": fake_quantize,
        "precision_hint": args.precision or "default", "compile_s": round(compile_s, 1),
        "step_median_s": round(statistics.median(times), 4), "runs_s": [round(t, 4) for t in times],
        "profiled_total_ms": round(total, 1),
        "by_precision_ms": {k: round(v, 1) for k, v in sorted(by_precision.items(), key=lambda kv: -kv[1])},
        "by_part_ms": {k: round(v, 1) for k, v in sorted(by_part.items(), key=lambda kv: -kv[1])},
        "by_operation": [{"type": t, "precision": p, "count": c, "ms": round(ms, 1), "share": round(ms / total, 4)}
                         for (t, p), (c, ms) in sorted(by_kind.items(), key=lambda kv: -kv[1][1])],
        "top_layers": [{"name": n, "type": t, "exec_type": e, "ms": round(ms, 2)}
                       for n, t, e, ms in sorted(layers, key=lambda row: -row[3])[: args.top]],
    }


def attention_probe(core, batch: int, tokens: int, heads: int, head_dim: int, threads: int) -> dict:
    """One attention core alone (MatMul -> scale -> Softmax -> MatMul, as exported), OpenVINO's default precision:
    its time at the model's head width and at 64 (an AMX-friendly width) tells a matrix-bound core from a
    softmax-bound one."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    def timed(dim: int) -> float:
        q, k, v = (ops.parameter([batch, heads, tokens, dim], ov.Type.f32, name=n) for n in "qkv")
        scores = ops.multiply(ops.matmul(q, k, False, True), ops.constant(np.float32(dim ** -0.5)))
        out = ops.matmul(ops.softmax(scores, -1), v, False, False)
        request = core.compile_model(ov.Model([out], [q, k, v]), "CPU",
                                     {"INFERENCE_NUM_THREADS": threads}).create_infer_request()
        feeds = [np.random.default_rng(i).standard_normal((batch, heads, tokens, dim), np.float32) for i in range(3)]
        request.infer(feeds)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            request.infer(feeds)
            times.append(time.perf_counter() - start)
        return min(times)

    flops = 4 * batch * heads * tokens * tokens * head_dim
    seconds = timed(head_dim)
    return {"batch": batch, "tokens": tokens, "heads": heads, "head_dim": head_dim, "ms": round(1e3 * seconds, 1),
            "gflops": round(flops / seconds / 1e9, 1), "ms_at_head_dim_64": round(1e3 * timed(64), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    parser.add_argument("--batch", type=int, default=2, help="denoiser batch (2 = one guided step; default 2)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="OpenVINO's inference precision (default: "
                                                                      "its own for the CPU)")
    parser.add_argument("--top", type=int, default=12, help="slowest layers to list")
    parser.add_argument("--attention-probe", metavar="TOKENS,HEADS,DIM",
                        help="also time one attention core of this shape alone (SD1.5 at 512²: 4096,8,40)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import openvino as ov

    core = ov.Core()
    results = [profile(folder, args, core) for folder in args.artifacts]
    base = results[0]["step_median_s"]
    print(f"denoiser step on OpenVINO {ov.get_version()}, {cpu_name()}, {args.size}x{args.size}, batch {args.batch},"
          f" {args.threads} threads, median of {args.runs} runs after a warm-up")
    for r in results:
        print(f"\n{r['recipe']} ({r['graph']}, {r['fake_quantize_nodes']} FakeQuantize): {r['step_median_s']:.3f} s"
              f" per step, {base / r['step_median_s']:.2f}x the first; profiled {r['profiled_total_ms']:.0f} ms:"
              f" " + ", ".join(f"{p} {ms:.0f} ms" for p, ms in r["by_precision_ms"].items()))
        for part, ms in r["by_part_ms"].items():
            print(f"  {part:<52} {ms:>8.1f} ms {100 * ms / r['profiled_total_ms']:5.1f} %")
        for row in r["by_operation"][:10]:
            print(f"  {row['type']:<22} {row['precision']:<6} x{row['count']:<4} {row['ms']:>8.1f} ms "
                  f"{100 * row['share']:5.1f} %")
        for row in r["top_layers"]:
            print(f"    {row['ms']:>7.2f} ms  {row['exec_type']:<28} {row['name'][:90]}")
    probe = None
    if args.attention_probe:
        tokens, heads, dim = (int(v) for v in args.attention_probe.split(","))
        probe = attention_probe(core, args.batch, tokens, heads, dim, args.threads)
        print(f"\nattention core alone, batch {args.batch}, {tokens} tokens, {heads} heads of {dim}: {probe['ms']} ms "
              f"({probe['gflops']} GFLOP/s); with heads of 64: {probe['ms_at_head_dim_64']} ms")
    result = {"benchmark": "openvino_profile", "attention_probe": probe, "cpu": cpu_name(),
              "openvino": ov.get_version(), "size": args.size, "batch": args.batch, "threads": args.threads,
              "runs": args.runs, "results": results}
    write_result(result, args.json or Path(__file__).parent / "results" / f"openvino_profile_{args.size}.json")


if __name__ == "__main__":
    main()
