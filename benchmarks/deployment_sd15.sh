#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only) at 512x512, 20 guided steps: sdopt's INT8 artifact on
# ONNX Runtime and on OpenVINO against diffusers eager fp32, the fp32 ONNX on ONNX Runtime and on OpenVINO.
#
#   benchmarks/deployment_sd15.sh [WORK_DIR] [RUNS]
#
# Writes benchmarks/results/bench_sd15_512.json and .png. On a 2-core CPU expect about 25 minutes per
# timed run of all five targets, plus the compress (about 10 minutes) and the OpenVINO build (1 minute).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd15}
runs=${2:-5}
mkdir -p "$work" benchmarks/results
if [ ! -f "$work/int8/manifest.json" ]; then
    sdopt compress --model arch:sd15 --recipe int8 --calib-size 256 --calib-num-prompts 8 --calib-steps 4 \
        --out "$work/int8"
fi
if ! grep -q '"openvino"' "$work/int8/manifest.json"; then
    sdopt build "$work/int8" --format openvino
fi
sdopt bench "$work/int8" --backends onnxruntime,openvino --model arch:sd15 --height 512 --width 512 --steps 20 \
    --peers diffusers,ort-fp32,openvino --runs "$runs" --json benchmarks/results/bench_sd15_512.json
