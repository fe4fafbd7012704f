#!/usr/bin/env bash
# The SD3.5-medium architecture (random weights, 4 of its 24 transformer blocks, no T5: speed only) at 256x256,
# 8 guided flow-matching steps, in one `sdopt bench` run: sdopt's fp32 artifact on ONNX Runtime and on OpenVINO
# against diffusers' StableDiffusion3Pipeline, Optimum's own export (optimum-ort), optimum-intel with NNCF hybrid
# INT8 (openvino-int8: left out for a source without T5, which its loader cannot open) and stable-diffusion.cpp
# (left out: it reads SD3.5 from single-file checkpoints, not a diffusers folder). Then the transformer's cost per
# call at 512² and 1024² (two guided steps: the denoiser stage's time per call of batch 2).
#
#   benchmarks/transformers_sd35m.sh [WORK_DIR] [RUNS]
#
# Writes benchmarks/results/bench_sd35m_256.json (and .png), bench_sd35m_call_512.json, bench_sd35m_call_1024.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd35m}
runs=${2:-1}
mkdir -p "$work" benchmarks/results
if [ ! -f "$work/fp32/manifest.json" ]; then
    sdopt compress --model arch:sd35m --out "$work/fp32"
fi
sdopt bench "$work/fp32" --backends onnxruntime,openvino --peers diffusers,optimum-ort,openvino-int8,sdcpp-f16 \
    --steps 8 --height 256 --width 256 --runs "$runs" --wide --json benchmarks/results/bench_sd35m_256.json
for size in 512 1024; do
    sdopt bench "$work/fp32" --backends onnxruntime --peers none --steps 2 --height $size --width $size \
        --runs 1 --wide --json "benchmarks/results/bench_sd35m_call_$size.json"
done
