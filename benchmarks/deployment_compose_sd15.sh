#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only) at 512x512, 20 guided DDIM steps, in one `sdopt bench` run:
# fp32, int8+cache and prune-small+int8+cache (benchmarks/recipes/sd15-prune-small-int8-cache.yaml: the graphs
# of the built-in composition, without its distillation) on ONNX Runtime and OpenVINO, against the openvino
# peer (the fp32 ONNX in OpenVINO at the device's default precision).
#
#   benchmarks/deployment_compose_sd15.sh [WORK_DIR] [RUNS] [PEERS] [TARGETS]
#
# TARGETS: which artifacts, space-separated (default "fp32 int8-cache prune-small-int8-cache").
#
# Writes benchmarks/results/bench_compose_sd15_512.json and .png. On a 2-core CPU: about 10 minutes of compress
# and builds, then about 5 minutes per timed run of all targets.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd15}
runs=${2:-2}
peers=${3:-openvino}
targets=${4:-fp32 int8-cache prune-small-int8-cache}
calib=(--calib-size 256 --calib-num-prompts 2 --calib-steps 4)
mkdir -p "$work" benchmarks/results
make() {  # name, recipe
    if [ ! -f "$work/$1/manifest.json" ]; then
        if [ "$2" = fp32 ]; then extra=(); else extra=("${calib[@]}"); fi
        sdopt compress --model arch:sd15 --recipe "$2" "${extra[@]}" --out "$work/$1"
    fi
    if ! grep -q '"openvino"' "$work/$1/manifest.json"; then
        sdopt build "$work/$1" --format openvino
    fi
}
declare -A recipes=([fp32]=fp32 [int8-cache]=int8+cache
                    [prune-small-int8-cache]=benchmarks/recipes/sd15-prune-small-int8-cache.yaml)
arts=()
for name in $targets; do
    make "$name" "${recipes[$name]}"
    arts+=("$work/$name")
done
sdopt bench "${arts[@]}" --backends onnxruntime,openvino --model arch:sd15 \
    --height 512 --width 512 --steps 20 --peers "$peers" --runs "$runs" \
    --json benchmarks/results/bench_compose_sd15_512.json
