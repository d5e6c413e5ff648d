#!/bin/bash
# Held-out image quality of the bench's paths on the trained demo model: fp32, OpenVINO bf16
# (bf16 cache), and the int8 + int8-K/V export on OpenVINO and ONNX Runtime; PSNR against
# ground truth at 4 views, mean over 20 held-out `multiview` scenes (the README's 0.3 dB target).
# Usage: bash docs/bench/cpu/quality.sh [WORK_DIR]   (default /tmp/quality)
set -euo pipefail
cd "$(dirname "$0")/../../.."
V=.venv/bin
Q=${1:-/tmp/quality}
$V/viewrt export --preset demo --out "$Q/model" --max-views 16 --force
$V/viewrt scene --out "$Q/calib" --scenes 8 --views 16 --size 64 --seed 700000 --style multiview
$V/viewrt scene --out "$Q/held" --scenes 20 --views 8 --size 64 --seed 900000 --style multiview
rm -rf "$Q/int8kv8"
$V/viewrt calib "$Q/model" --out "$Q/int8kv8" --precision int8 --kv int8 --list "$Q/calib/scenes.txt"
run() {  # name export backend [options]
    rm -rf "$Q/run/$1"
    $V/viewrt infer "$2" --list "$Q/held/scenes.txt" --views 4 --out "$Q/run/$1" --backend "$3" "${@:4}" > "$Q/$1.log" 2>&1
    $V/python -c "import json,sys; s=json.load(open(sys.argv[1])); print(f'{sys.argv[2]:22s} PSNR vs GT {s[\"psnr_mean\"]:.3f} dB ({s[\"n_ok\"]} scenes)')" "$Q/run/$1/summary.json" "$1"
}
run ort-fp32 "$Q/model" ort
run openvino-f32 "$Q/model" openvino-f32
run openvino-bf16 "$Q/model" openvino --inference-precision bf16
run openvino-int8kv8 "$Q/int8kv8" openvino
run ort-int8kv8 "$Q/int8kv8" ort
