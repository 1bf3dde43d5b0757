"""Translate a profile measured on one instance to another instance of the catalogue.

The model, documented in calibration/README.md ("Translation between GPUs"):
- memory: a copy's resident bytes and the fixed baseline do not depend on the GPU; what
  changes is the total NVML reports, read from the catalogue.
- execution, in two figures: the batch-1 time, and the time each further item of a batch
  adds when the GPU is busy (the inverse of the throughput a busy model sustains). Each is
  split into a host-bound part (framework dispatch, request handling inside the backend:
  ``host_share`` and ``busy_host_share``, worked out from evidence on the GPU the profile
  was made on) which moves with the instance's CPU speed, and GPU work which moves with
  the per-GPU model below.
- the per-GPU model (fitted on NVIDIA's multi-GPU corpus, mmesim.derive.corpus): GPU work is
  the larger of compute time (the model's FLOPs over the GPU's peak in the arithmetic its
  engine uses: tensor-core FP16 for TensorRT, FP32 CUDA cores for TorchScript, at the same
  fraction of peak on every GPU, a property of the model's kernels measured on the source
  GPU) and memory time (weights once and activation traffic per item over the GPU's
  bandwidth). A profile measured one request at a time may also carry the GPU fill (a batch
  too small to fill a larger GPU gains less from it). Without ``work`` figures the GPU part
  is taken as compute-bound.
- TorchScript launches its kernels from the host while the GPU runs them (``work.launch_s``,
  from the corpus): its batch-1 time is serial host work plus the longer of launch and GPU.
- host-side decoding moves with the CPU as well; ``host_cpu_speed`` becomes the target's,
  so translating a translated profile to the same instance changes nothing.
- a fresh copy's first executions (``first_executions_s``) are kept as measured: a backend's
  lazy initialisation, for which no evidence says how it moves between GPUs;
- batching and the sharing of the GPU between copies (``gpu_overlap``) are kept: the
  translation rescales the time of each execution, so a busy GPU's throughput scales by
  the busy-item ratio, whatever sharing model consumes it.
A profile measured on CPU carries no evidence of GPU speed: it is used unchanged and says
so (it is not "translated").
"""

from __future__ import annotations

from mmesim.catalog import CPU, GPU, LOCAL, InstanceType, host_cpu, load_catalog
from mmesim.errors import ConfigError
from mmesim.profile import BatchTiming, GpuWork, ModelProfile, Provenance


def gpu_seconds(work: GpuWork | None, batch: int, gpu: GPU, framework: str) -> float:
    """Time of the GPU work of a batch (roofline, as fitted on the multi-GPU corpus,
    mmesim.derive.corpus): compute at the attainable fraction of peak, counting a batch too
    small to fill the GPU as ``fill_items_per_sm`` items per SM larger, or memory traffic
    (weights once, activations per item) at peak bandwidth, whichever is longer. Without
    work figures: one unit of compute-bound work."""
    if work is None:
        return batch / gpu.peak_flops(framework)
    fill = work.fill_items_per_sm * (gpu.sms or 0)
    compute = (batch + fill) * work.flops_per_item / (work.peak_fraction * gpu.peak_flops(framework))
    return max(compute, (work.weight_bytes + batch * work.activation_bytes_per_item) / (gpu.bandwidth_gbs * 1e9))


def gpu_ratio(work: GpuWork | None, src: GPU, dst: GPU, framework: str, batch: int = 1) -> float:
    """How much longer the GPU work of a batch takes on ``dst`` than on ``src`` (< 1: faster)."""
    return gpu_seconds(work, batch, dst, framework) / gpu_seconds(work, batch, src, framework)


def busy_batch(profile: ModelProfile) -> int:
    """The batch a busy GPU runs this model at: Triton's largest."""
    return max(1, profile.triton.batch_limit)


def ratios(profile: ModelProfile, instance: InstanceType) -> tuple[float, float, float, float]:
    """(batch-1 time, busy per-item time, decode, batch-1 GPU work) ratios of ``instance`` over
    the profile's own: each figure is host + GPU work in sequence, the host part following the
    CPU speed, the GPU part the per-GPU model."""
    catalog = load_catalog()
    dst = catalog.gpu(instance.gpu)
    cpu = profile.host_cpu_speed / instance.cpu_speed
    if profile.gpu == dst.key:
        g1 = gb = 1.0
    else:
        src = catalog.gpu(profile.gpu)
        g1 = gpu_ratio(profile.work, src, dst, profile.framework, 1)
        gb = gpu_ratio(profile.work, src, dst, profile.framework, busy_batch(profile))
    h1 = profile.host_share
    hb = h1 if profile.busy_host_share is None else profile.busy_host_share
    return batch1_ratio(profile, cpu, g1), hb * cpu + (1 - hb) * gb, cpu, g1


def batch1_ratio(profile: ModelProfile, cpu: float, g1: float) -> float:
    """Batch-1 time: host work, then the GPU's; where the host launches the kernels while the
    GPU runs them (TorchScript: ``work.launch_s``), the longer of launch and GPU time."""
    s1, g = profile.service[0].seconds, 1 - profile.host_share     # GPU share of the batch-1 time
    launch = min(profile.work.launch_s / s1, 1.0) if profile.work else 0.0
    return (1 - max(launch, g)) * cpu + max(launch * cpu, g * g1)


def translate(profile: ModelProfile, instance: InstanceType) -> ModelProfile:
    """The profile as it would measure on ``instance``; unchanged if it was made there
    (translating twice to the same instance is the same as once)."""
    if profile.gpu == "cpu":    # no evidence of GPU speed: used as measured (see cpu_profiles_on_gpu)
        return profile
    if instance.gpu == CPU:
        raise ConfigError(f"a profile measured on a GPU cannot be predicted on the CPU-only instance "
                          f"{instance.name}: calibrate the model on this host (mmesim calibrate --device cpu)",
                          field="profile", value=profile.name)
    gpu = load_catalog().gpu(instance.gpu)
    r1, rb, cpu, g1 = ratios(profile, instance)
    if profile.gpu == gpu.key and abs(cpu - 1) < 1e-12:
        return profile
    s1 = profile.service[0].seconds
    service = [BatchTiming(batch=t.batch, cv=t.cv,
                           seconds=s1 * r1 + (t.seconds - s1) * rb if t.batch > profile.service[0].batch else t.seconds * r1)
               for t in profile.service]
    h1 = profile.host_share
    hb = h1 if profile.busy_host_share is None else profile.busy_host_share
    src = load_catalog().gpu(profile.gpu)
    prec = "FP16 tensor" if profile.framework == "tensorrt" else "FP32"
    note = (f"translated from {src.name} to {gpu.name} ({instance.name}): batch-1 time x{r1:.3f} "
            f"({h1:.0%} host-bound), busy per-item time x{rb:.3f} ({hb:.0%} host-bound); host parts by CPU "
            f"speed x{cpu:.3f}, GPU work by the roofline of {prec} peak and bandwidth"
            f"{'' if profile.work else ' (no work figures: compute-bound)'}; decode x{cpu:.3f}; memory unchanged")
    update = {
        "service": service, "gpu": gpu.key, "host_cpu_speed": instance.cpu_speed,
        "decode_s_per_byte": profile.decode_s_per_byte * cpu,
        "work": profile.work.model_copy(update={"launch_s": profile.work.launch_s * cpu}) if profile.work else None,
        # the shares of the translated times, so that a further translation starts from them
        "host_share": _share(r1 - (1 - h1) * g1, r1),
        "busy_host_share": _share(hb * cpu, rb),
        "provenance": Provenance(method="translated", source=f"{profile.name} ({profile.provenance.method}: "
                                 f"{profile.provenance.source})", notes=note, date=profile.provenance.date),
    }
    return profile.model_copy(update=update)


def _share(host: float, total: float) -> float:
    return min(1.0, max(0.0, host / total)) if total > 0 else 0.0


def other_processor(profiles: list[ModelProfile], instance: InstanceType) -> list[str]:
    """CPU profiles calibrated on another processor than this host's, used on ``local``, each
    as "name (processor)". Their CPU costs are that processor's, and so is how those costs
    grow after an idle spell, which no single speed ratio moves (tiny-bert's executions after
    50 ms idle: x2.35 of back to back on an Intel Xeon, x1.56 on an AMD EPYC, 2026-12-06):
    recalibrate on this host. Profiles that do not say where they were made are not named."""
    if instance.name != LOCAL:
        return []
    here = host_cpu()
    return [f"{p.name} ({p.provenance.host_cpu})" for p in profiles
            if p.gpu == CPU and p.provenance.host_cpu not in (None, here)]


def cpu_profiles_on_gpu(profiles: list[ModelProfile], instance: InstanceType) -> list[str]:
    """Names of profiles measured on CPU that a GPU instance would use with their CPU figures."""
    if instance.gpu == "cpu":
        return []
    return [p.name for p in profiles if p.gpu == "cpu"]
