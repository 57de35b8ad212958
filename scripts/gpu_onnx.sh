#!/usr/bin/env bash
# The GPU check of the ONNX backend, to run once on a lent GPU machine (the device tool):
# the CUDA build of onnxruntime, the export, the ONNX tests (their default provider order
# puts CUDA first) and `bench onnx` with its CUDA row. Results go to $OUT (default out/gpu).
# onnxruntime-gpu[cuda,cudnn] must be installable there (or installed): the device machines
# reach nothing outside, so carry the wheels or run it where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
MOODLANE_ORT=gpu bash scripts/setup.sh
.venv/bin/python -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee "$OUT/providers.txt"
.venv/bin/moodlane export onnx --out "$OUT/export" -q
.venv/bin/python -m pytest -q tests/test_onnx.py tests/test_onnx_cli.py 2>&1 | tee "$OUT/tests.txt"
.venv/bin/moodlane bench onnx --onnx "$OUT/export" --trials 0 >"$OUT/bench.json"
rm -rf "$OUT/export"
