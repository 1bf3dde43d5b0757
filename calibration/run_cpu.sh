#!/usr/bin/env bash
# The CPU profiles shipped in calibration/profiles/, as they were made (see calibration/README.md,
# "Measured profiles"): Python backend, the tritonserver bundled with nvidia-pytriton, one torch
# thread per model instance.
set -euo pipefail
cd "$(dirname "$0")/.."
MMESIM=${MMESIM:-.venv/bin/mmesim}
$MMESIM calibrate --model tiny-mlp --framework python --device cpu --cpu-threads 1 \
  --max-models --memory-budget 2GiB --out calibration/profiles/tiny-mlp-python-cpu.json
$MMESIM calibrate --model tiny-bert --framework python --device cpu --cpu-threads 1 \
  --max-models --memory-budget 2GiB --out calibration/profiles/tiny-bert-python-cpu.json
$MMESIM calibrate --model resnet50 --framework python --device cpu --cpu-threads 1 \
  --concurrency 1,2 --repeats 3 --max-models --memory-budget 4GiB \
  --out calibration/profiles/resnet50-python-cpu.json
