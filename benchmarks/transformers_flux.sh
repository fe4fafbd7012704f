#!/usr/bin/env bash
# The FLUX.1-dev architecture (random weights: speed only; 2 of its 19 double-stream and 4 of its 38
# single-stream blocks, a one-layer T5 of T5-XXL's width) at 256² and 512², 4 flow-matching steps with its
# embedded guidance (batch 1): sdopt's fp32 artifact on ONNX Runtime against diffusers' FluxPipeline; the
# transformer's cost per call, from which the full model's scales by its blocks.
#
#   benchmarks/transformers_flux.sh [WORK_DIR] [RUNS]
#
# Writes benchmarks/results/bench_flux_256.json (and .png) and bench_flux_call_512.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-flux}
runs=${2:-1}
mkdir -p "$work" benchmarks/results
if [ ! -f "$work/fp32/manifest.json" ]; then
    sdopt compress --model arch:flux --out "$work/fp32"
fi
sdopt bench "$work/fp32" --backends onnxruntime --peers diffusers --steps 4 --height 256 --width 256 \
    --runs "$runs" --wide --json benchmarks/results/bench_flux_256.json
sdopt bench "$work/fp32" --backends onnxruntime --peers none --steps 2 --height 512 --width 512 \
    --runs 1 --wide --json benchmarks/results/bench_flux_call_512.json
