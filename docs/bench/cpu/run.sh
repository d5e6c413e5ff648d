#!/bin/bash
# The README's bench table: export `small` (64 views), an int8 + int8-K/V copy, and one
# `viewrt bench` run of every CPU column, with the machine and the load average printed.
# Usage: bash docs/bench/cpu/run.sh [WORK_DIR]   (default /tmp/bench; results in WORK_DIR/res)
set -euo pipefail
cd "$(dirname "$0")/../../.."
V=.venv/bin
B=${1:-/tmp/bench}
echo "start $(date -Is) $(uptime)"
lscpu | grep -E 'Model name|^CPU\(s\)' || true
grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_tile\|avx512_vnni\|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
$V/python -c "import torch, onnxruntime, openvino; print(torch.__version__, onnxruntime.__version__, openvino.__version__)"
$V/viewrt export --preset small --out "$B/small" --max-views 64 --force
rm -rf "$B/int8kv8"
$V/viewrt calib "$B/small" --out "$B/int8kv8" --precision int8 --kv int8 --synthetic 4
sleep 30  # let the load average settle
echo "before bench $(uptime)"
$V/viewrt bench "$B/small" --out "$B/res" --views 4,16,64 --targets 8 --repeats 3 --warmup 1 \
  --backends ort,ort-plain,openvino,openvino-plain,openvino-f32,openvino-int8,openvino-plain-int8,ort-int8,torch-fp32,torch-bf16,torch-compile,torch-compile-bf16 \
  --quantized-export "$B/int8kv8"
echo "end $(date -Is) $(uptime)"
