#!/usr/bin/env bash
# Calibrate the reference's five models on this GPU host in one go: TorchScript
# (pytorch_libtorch) and TensorRT, each with the max-models-loaded procedure, written to
# calibration/profiles/<model>-<framework>-<gpu>.json (+ .calibration.json reports).
#
# Needs: an NVIDIA GPU and driver, Docker with the NVIDIA Container Toolkit. Builds
# containers/Dockerfile, then runs each calibration inside that image (Triton as a local process
# there), so that TensorRT engines are built by the same TensorRT that serves them.
#   calibration/run_gpu.sh                  # all five x {pytorch, tensorrt}
#   MODELS="resnet50" FRAMEWORKS="pytorch" calibration/run_gpu.sh
# With RUNNER=docker it instead drives the image from this host's venv (make test builds it):
# pytorch only, as a host-built TensorRT engine may not match the image's TensorRT.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-mmesim-triton:latest}
MODELS=${MODELS:-"resnet50 convnext_base vit_large_patch16_224 bert-base-uncased roberta-large"}
FRAMEWORKS=${FRAMEWORKS:-"pytorch tensorrt"}
DEVICE=${DEVICE:-cuda:0}
RUNNER=${RUNNER:-image}
THRESHOLD=${THRESHOLD:-0.9}

nvidia-smi -L >/dev/null || { echo "run_gpu.sh: no NVIDIA GPU/driver here (nvidia-smi failed)" >&2; exit 2; }
docker info >/dev/null || { echo "run_gpu.sh: no Docker engine reachable (docker info failed)" >&2; exit 2; }
docker build -t "$IMAGE" -f containers/Dockerfile .

for model in $MODELS; do
  for framework in $FRAMEWORKS; do
    echo "=== $model / $framework ==="
    if [ "$RUNNER" = docker ]; then
      .venv/bin/mmesim calibrate --model "$model" --framework "$framework" --device "$DEVICE" \
        --runner docker --image "$IMAGE" --max-models --threshold "$THRESHOLD" --out calibration/profiles/
    else
      docker run --rm --gpus "device=${DEVICE#cuda:}" --shm-size 2g \
        -v "$PWD/calibration/profiles:/out" "$IMAGE" \
        mmesim calibrate --model "$model" --framework "$framework" --device cuda:0 \
          --runner local --max-models --threshold "$THRESHOLD" --out /out/
    fi
  done
done
ls -l calibration/profiles/
