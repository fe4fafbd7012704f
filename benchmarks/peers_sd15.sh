#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only) at 512x512, 20 guided DDIM steps, in one `sdopt bench` run:
# sdopt's int8 and int8+cache artifacts (OpenVINO builds) against the CPU peers people deploy: diffusers,
# sdopt's fp32 ONNX on ONNX Runtime and OpenVINO, Optimum's own export (optimum-ort), optimum-intel with NNCF
# hybrid INT8 (openvino-int8) and stable-diffusion.cpp at f16 and q8_0 (sdcpp).
#
#   benchmarks/peers_sd15.sh [WORK_DIR] [RUNS] [PEERS]
#
# Needs the compat extra and `pip install stable-diffusion-cpp-python` (a peer whose tool is missing is left out
# with a note). Writes benchmarks/results/bench_peers_sd15_512.json and .png. The peers' builds are cached under
# $SDOPT_CACHE/peers: the first run also exports SD1.5 with Optimum and calibrates NNCF on 200 UNet calls.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd15}
runs=${2:-1}
peers=${3:-diffusers,ort-fp32,openvino,optimum-ort,openvino-int8,sdcpp}
calib=(--calib-size 256 --calib-num-prompts 2 --calib-steps 4)
mkdir -p "$work" benchmarks/results
make() {  # name, recipe
    if [ ! -f "$work/$1/manifest.json" ]; then
        sdopt compress --model arch:sd15 --recipe "$2" "${calib[@]}" --out "$work/$1"
    fi
    if ! grep -q '"openvino"' "$work/$1/manifest.json"; then
        sdopt build "$work/$1" --format openvino
    fi
}
make int8 int8
make int8-cache int8+cache
sdopt bench "$work/int8" "$work/int8-cache" --backends openvino --model arch:sd15 \
    --height 512 --width 512 --steps 20 --peers "$peers" --runs "$runs" \
    --json benchmarks/results/bench_peers_sd15_512.json
