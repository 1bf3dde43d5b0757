"""Translate a profile measured on one GPU to another GPU of the catalogue.

The model, documented in calibration/README.md:
- memory: a copy's resident bytes (weights, activations, framework workspace) and the fixed
  baseline (CUDA context, server) do not depend on the GPU; what changes is the total NVML
  reports, which the instance reads from the catalogue.
- compute: execution time scales with the mean of two ratios, peak arithmetic (FP16 tensor
  for TensorRT engines, FP32 otherwise: the reference ran TorchScript in FP32) and memory
  bandwidth, because inference at small batches is partly bandwidth-bound and partly
  compute-bound. The split is a documented assumption, not a fit.
- host-side decoding moves with the instance's CPU (cpu_speed), applied in the simulator.
"""

from __future__ import annotations

from mmesim.catalog import GPU, load_catalog
from mmesim.profile import BatchTiming, ModelProfile, Provenance


def compute_ratio(src: GPU, dst: GPU, framework: str) -> float:
    """How much longer an execution takes on ``dst`` than on ``src`` (< 1: faster)."""
    flops = (src.fp16_tflops / dst.fp16_tflops) if framework == "tensorrt" else (src.fp32_tflops / dst.fp32_tflops)
    return 0.5 * flops + 0.5 * (src.bandwidth_gbs / dst.bandwidth_gbs)


def translate(profile: ModelProfile, gpu: GPU) -> ModelProfile:
    """The profile as it would measure on ``gpu``; unchanged if it was measured there."""
    if profile.gpu == gpu.key:
        return profile
    if profile.gpu == "cpu":
        # A CPU profile says nothing about GPU speed: keep its figures, and say so.
        note = f"measured on CPU, used unchanged on {gpu.name}"
        return profile.model_copy(update={"provenance": _prov(profile, note)})
    src = load_catalog().gpu(profile.gpu)
    ratio = compute_ratio(src, gpu, profile.framework)
    service = [BatchTiming(batch=t.batch, seconds=t.seconds * ratio, cv=t.cv) for t in profile.service]
    note = (f"translated from {src.name} to {gpu.name}: execution x{ratio:.3f} "
            f"(mean of peak-{'FP16' if profile.framework == 'tensorrt' else 'FP32'} and bandwidth ratios); "
            "memory per copy and baseline unchanged")
    return profile.model_copy(update={"service": service, "gpu": gpu.key, "provenance": _prov(profile, note)})


def _prov(profile: ModelProfile, note: str) -> Provenance:
    return Provenance(method="translated", source=f"{profile.name} ({profile.provenance.method}: "
                      f"{profile.provenance.source})", notes=note, date=profile.provenance.date)
