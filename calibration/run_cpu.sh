#!/usr/bin/env bash
# The CPU profiles shipped in calibration/profiles/, as they were made (see calibration/README.md,
# "Measured profiles"): Python backend, the tritonserver bundled with nvidia-pytriton, one torch
# thread per model instance, the default calibration (binary tensors for timing, the batch sweep
# stopping once an execution takes 1 s, 1/2/4/8 copies at once), plus the max-models procedure.
set -euo pipefail
cd "$(dirname "$0")/.."
MMESIM=${MMESIM:-.venv/bin/mmesim}
for spec in "tiny-mlp 2GiB" "tiny-bert 2GiB" "resnet50 4GiB"; do
  set -- $spec
  /usr/bin/time -f "$1: %e s" $MMESIM calibrate --model "$1" --framework python --device cpu --cpu-threads 1 --scaling 1,2,4,8 \
    --max-models --memory-budget "$2" --out "calibration/profiles/$1-python-cpu.json"
done
# ONNX: the same tiny-bert exported to ONNX, run by onnxruntime inside the Python backend
/usr/bin/time -f "tiny-bert onnx: %e s" $MMESIM calibrate --model tiny-bert --framework onnx --device cpu --cpu-threads 1 \
  --scaling 1,2,4,8 --max-models --memory-budget 2GiB --out calibration/profiles/tiny-bert-onnx-cpu.json
