#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only) at 512x512, 20 guided DDIM steps, in one `sdopt bench` run:
# int8+cache and prune-small+int8+cache (benchmarks/recipes/sd15-prune-small-int8-cache.yaml: the graphs of
# the built-in composition, without its distillation) on ONNX Runtime and OpenVINO, against the openvino peer
# (the fp32 ONNX in OpenVINO at the device's default precision).
#
#   benchmarks/deployment_compose_sd15.sh [WORK_DIR] [RUNS] [PEERS]
#
# Writes benchmarks/results/bench_compose_sd15_512.json and .png. On a 2-core CPU: about 10 minutes of compress
# and builds, then about 5 minutes per timed run of all targets.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd15}
runs=${2:-2}
peers=${3:-openvino}
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
make int8-cache int8+cache
make prune-small-int8-cache benchmarks/recipes/sd15-prune-small-int8-cache.yaml
sdopt bench "$work/int8-cache" "$work/prune-small-int8-cache" --backends onnxruntime,openvino --model arch:sd15 \
    --height 512 --width 512 --steps 20 --peers "$peers" --runs "$runs" \
    --json benchmarks/results/bench_compose_sd15_512.json
