"""Translate a profile measured on one instance to another instance of the catalogue.

The model, documented in calibration/README.md:
- memory: a copy's resident bytes (weights, activations, framework workspace) and the fixed
  baseline (CUDA context, server) do not depend on the GPU; what changes is the total NVML
  reports, which the instance reads from the catalogue.
- execution: a profile's ``host_share`` of each execution is bound by the host CPU
  (framework dispatch, the Python backend) and scales with the catalogue's CPU speed; the
  rest is GPU work and scales with the mean of two ratios, peak arithmetic (FP16 tensor for
  TensorRT engines, FP32 otherwise: the reference ran TorchScript in FP32) and memory
  bandwidth, because inference at small batches is partly bandwidth-bound and partly
  compute-bound. The split of GPU work is a documented assumption, not a fit.
- host-side decoding moves with the instance's CPU (cpu_speed), applied in the simulator.
"""

from __future__ import annotations

from mmesim.catalog import CPU, GPU, InstanceType, load_catalog
from mmesim.errors import ConfigError
from mmesim.profile import BatchTiming, ModelProfile, Provenance


def compute_ratio(src: GPU, dst: GPU, framework: str) -> float:
    """How much longer GPU work takes on ``dst`` than on ``src`` (< 1: faster)."""
    flops = (src.fp16_tflops / dst.fp16_tflops) if framework == "tensorrt" else (src.fp32_tflops / dst.fp32_tflops)
    return 0.5 * flops + 0.5 * (src.bandwidth_gbs / dst.bandwidth_gbs)


def execution_ratio(profile: ModelProfile, instance: InstanceType) -> float:
    """How much longer one execution of ``profile`` takes on ``instance`` than where it was made."""
    catalog = load_catalog()
    gpu = catalog.gpu(instance.gpu)
    gpu_ratio = 1.0 if profile.gpu == gpu.key else compute_ratio(catalog.gpu(profile.gpu), gpu, profile.framework)
    cpu_ratio = profile.host_cpu_speed / instance.cpu_speed
    return profile.host_share * cpu_ratio + (1 - profile.host_share) * gpu_ratio


def translate(profile: ModelProfile, instance: InstanceType) -> ModelProfile:
    """The profile as it would measure on ``instance``; unchanged if it was made there."""
    gpu = load_catalog().gpu(instance.gpu)
    if gpu.key == CPU:
        if profile.gpu != CPU:
            raise ConfigError(f"a profile measured on a GPU cannot be predicted on the CPU-only instance "
                              f"{instance.name}: calibrate the model on this host (mmesim calibrate --device cpu)",
                              field="profile", value=profile.name)
        return profile
    if profile.gpu == "cpu":
        # A CPU profile says nothing about GPU speed: keep its figures, and say so.
        return profile.model_copy(update={"provenance": _prov(profile, f"measured on CPU, used unchanged on {gpu.name}")})
    ratio = execution_ratio(profile, instance)
    if profile.gpu == gpu.key and abs(ratio - 1) < 1e-9:
        return profile
    service = [BatchTiming(batch=t.batch, seconds=t.seconds * ratio, cv=t.cv) for t in profile.service]
    src = load_catalog().gpu(profile.gpu)
    note = (f"translated from {src.name} to {gpu.name} ({instance.name}): execution x{ratio:.3f} "
            f"({profile.host_share:.0%} host-bound, by CPU speed; the rest by the mean of peak-"
            f"{'FP16' if profile.framework == 'tensorrt' else 'FP32'} and bandwidth ratios); "
            "memory per copy and baseline unchanged")
    return profile.model_copy(update={"service": service, "gpu": gpu.key, "provenance": _prov(profile, note)})


def _prov(profile: ModelProfile, note: str) -> Provenance:
    return Provenance(method="translated", source=f"{profile.name} ({profile.provenance.method}: "
                      f"{profile.provenance.source})", notes=note, date=profile.provenance.date)
