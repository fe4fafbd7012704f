#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only): the unpruned UNet against prune-base, prune-small and
# prune-channels (speed forms in benchmarks/recipes/: the pruned graphs without distillation) at 256x256 on
# ONNX Runtime, in one run each: UNet calls alone (benchmarks/unet_latency.py: guided batch 2, interleaved)
# and whole images (`sdopt bench`, 20 DDIM steps; parameters and MACs come from the manifests).
#
#   benchmarks/prune_sd15.sh [WORK_DIR] [RUNS]
#
# Writes benchmarks/results/unet_latency_prune_sd15_256.json and bench_prune_sd15_256.{json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/bench-sd15}
runs=${2:-3}
mkdir -p "$work" benchmarks/results
make() {  # name, recipe
    if [ ! -f "$work/$1/manifest.json" ]; then
        sdopt compress --model arch:sd15 --recipe "$2" --out "$work/$1"
    fi
}
make fp32 fp32
make prune-base benchmarks/recipes/prune-base-no-distill.yaml
make prune-small benchmarks/recipes/prune-small-no-distill.yaml
make prune-channels benchmarks/recipes/prune-channels-no-distill.yaml
arts=("$work/fp32" "$work/prune-base" "$work/prune-small" "$work/prune-channels")
python benchmarks/unet_latency.py "${arts[@]}" --size 256 --batch 2 --runs 7 \
    --json benchmarks/results/unet_latency_prune_sd15_256.json
sdopt bench "${arts[@]}" --backends onnxruntime --model arch:sd15 --peers none --height 256 --width 256 \
    --steps 20 --runs "$runs" --json benchmarks/results/bench_prune_sd15_256.json
