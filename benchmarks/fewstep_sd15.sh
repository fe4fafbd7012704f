#!/usr/bin/env bash
# SD1.5 architecture (random weights: speed only) at 512x512: the few-step deployment against the model as
# people run it, in one `sdopt bench` run on OpenVINO: lcm+int8+tiny-vae at its 4 LCM steps
# (benchmarks/recipes/sd15-lcm-int8-tiny-vae.yaml), the same 4-step model in fp32 (sd15-lcm.yaml), and the
# openvino peer (the fp32 ONNX of the source at its 20 guided DDIM steps). Then the tiny decoder against the
# full one, whole and tiled (benchmarks/vae_decoders.py).
#
#   benchmarks/fewstep_sd15.sh [WORK_DIR] [RUNS]
#
# Writes benchmarks/results/bench_fewstep_sd15_512.json (.png) and vae_decoders_sd15_512.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/fewstep-sd15}
runs=${2:-2}
mkdir -p "$work" benchmarks/results
for name in lcm lcm-int8-tiny-vae; do
    if [ ! -f "$work/$name/manifest.json" ]; then
        sdopt compress --model arch:sd15 --recipe "benchmarks/recipes/sd15-$name.yaml" --out "$work/$name"
    fi
    if ! grep -q '"openvino"' "$work/$name/manifest.json"; then
        sdopt build "$work/$name" --format openvino
    fi
done
sdopt bench "$work/lcm-int8-tiny-vae" "$work/lcm" --backends openvino --model arch:sd15 --height 512 --width 512 \
    --peers openvino --runs "$runs" --json benchmarks/results/bench_fewstep_sd15_512.json
python benchmarks/vae_decoders.py "$work/lcm-int8-tiny-vae" --size 512 --tile 256 --runs 3 \
    --json benchmarks/results/vae_decoders_sd15_512.json
