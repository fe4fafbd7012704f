#!/usr/bin/env bash
# Peak memory of SD1.5 architecture (random weights: speed only) at 512x512, INT8, per stage and per
# process, in default and --low-memory mode on ONNX Runtime and OpenVINO; then a static OpenVINO build
# against the dynamic one.
#
#   benchmarks/memory_sd15.sh [WORK_DIR] [RUNS] [STEPS] [BEFORE_DIR ...]
#
# BEFORE_DIR: artifacts to measure beside the new one in the same run (e.g. one made by an earlier sdopt,
# built for OpenVINO). Writes benchmarks/results/bench_memory_sd15_512.json, bench_static_sd15_512.json and
# same_image_memory_sd15_512.json (PSNR of each mode's image against the first artifact's default path).
# On a 2-core CPU at 8 steps expect ~3.5 minutes per row (8 rows with one BEFORE_DIR), plus the compress
# (~8 minutes) and the OpenVINO builds (~2 minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/memory-sd15}
runs=${2:-2}
steps=${3:-8}
before=("${@:4}")
mkdir -p "$work" benchmarks/results
if [ ! -f "$work/int8/manifest.json" ]; then
    sdopt compress --model arch:sd15 --recipe int8 --calib-size 256 --calib-num-prompts 8 --calib-steps 4 \
        --out "$work/int8"
fi
if ! grep -q '"openvino"' "$work/int8/manifest.json"; then
    sdopt build "$work/int8" --format openvino
fi
if [ ! -f "$work/int8-static/manifest.json" ]; then
    rm -rf "$work/int8-static.tmp"
    cp -r "$work/int8" "$work/int8-static.tmp"
    sdopt build "$work/int8-static.tmp" --format openvino --static --height 512 --width 512
    mv "$work/int8-static.tmp" "$work/int8-static"
fi
sdopt bench "${before[@]}" "$work/int8" --backends onnxruntime,openvino --memory both --model arch:sd15 \
    --height 512 --width 512 --steps "$steps" --peers none --runs "$runs" \
    --json benchmarks/results/bench_memory_sd15_512.json
sdopt bench "$work/int8" "$work/int8-static" --backends openvino --model arch:sd15 --height 512 --width 512 \
    --steps "$steps" --peers none --runs "$runs" --json benchmarks/results/bench_static_sd15_512.json
# the image: every memory mode and build against the first artifact's default path, same prompt and seed
prompt="a photo of a red fox in the snow"
reference=${before[0]:-$work/int8}
images=()
for args in "$reference" "$work/int8" "$work/int8 --low-memory" "$work/int8 --backend openvino --low-memory" \
            "$work/int8-static --backend openvino"; do
    images+=("$work/image-${#images[@]}.png")
    # shellcheck disable=SC2086
    sdopt run $args --prompt "$prompt" --seed 0 --steps "$steps" --out "${images[-1]}"
done
python benchmarks/same_image.py "${images[@]}" --json benchmarks/results/same_image_memory_sd15_512.json
