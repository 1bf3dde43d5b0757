"""The catalogue of GPUs and instance types, read from catalog.yaml (data, not code), plus
the instance type ``local``: the host mmesim runs on, described at run time."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field

from mmesim.errors import ConfigError
from mmesim.serde import Model, validate
from mmesim.units import GiB, MiB


class GPU(Model):
    key: str
    name: str
    memory_gib: float = Field(gt=0)
    nvml_total_mib: int = Field(gt=0)
    nvml_verified: bool = False
    fp32_tflops: float = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)
    architecture: str
    pcie_gbs: float | None = Field(default=None, gt=0,
                                   description="host link per direction, GB/s; None: no host-to-device copy (a CPU)")
    sms: int | None = Field(default=None, gt=0, description="streaming multiprocessors: how much parallel work fills the GPU")
    tdp_w: float | None = Field(default=None, gt=0, description="board power limit")
    boost_mhz: float | None = Field(default=None, gt=0, description="boost clock the peak figures assume")
    sources: list[str] = Field(default_factory=list, description="where the figures come from")
    results: list["PublishedResult"] = Field(default_factory=list, description="public inference results on this GPU")

    def peak_flops(self, framework: str) -> float:
        """Peak FLOP/s of the arithmetic a framework's engines use: tensor-core FP16 for
        TensorRT engines (the reference built them FP16), FP32 CUDA cores otherwise
        (TorchScript in FP32)."""
        return (self.fp16_tflops if framework == "tensorrt" else self.fp32_tflops) * 1e12

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)

    @property
    def nvml_total_bytes(self) -> int:
        """What NVML reports as total: the denominator of every utilisation figure."""
        return self.nvml_total_mib * MiB


class PublishedResult(Model):
    """One public inference figure for a GPU, kept beside the specs it checks."""

    what: str
    value: float
    unit: str
    source: str


GPU.model_rebuild()


class InstanceType(Model):
    name: str
    gpu: str
    gpus: int = 1
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    network_gbps: float = Field(gt=0)
    disk_gb: float = Field(gt=0)
    disk_note: str | None = None
    disk_mbs: float | None = Field(default=None, gt=0,
                                   description="sequential read of the model cache volume, MB/s; None: not modelled")
    cpu: str
    cpu_speed: float = Field(gt=0)
    price_usd_per_hour: float = Field(gt=0)
    price_date: str
    price_verified: bool

    @property
    def network_bytes_per_s(self) -> float:
        return self.network_gbps * 1e9 / 8

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * 1e9)

    @property
    def disk_read_bytes_per_s(self) -> float | None:
        return self.disk_mbs * 1e6 if self.disk_mbs else None

    @property
    def host_memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)


class MMESupport(Model):
    """The instance types SageMaker documents for GPU multi-model endpoints, with where and when that was read."""

    source: str
    checked: str
    instance_types: list[str]


class Catalog(Model):
    gpus: dict[str, GPU]
    instances: dict[str, InstanceType]
    price_source: str
    mme_support: MMESupport | None = None

    def mme_eligible(self, instance: str | InstanceType) -> bool:
        """Whether a multi-model endpoint may use the type: every CPU type (``local``), and the
        GPU types of ``mme_support``."""
        it = self.instance(instance) if isinstance(instance, str) else instance
        if isinstance(it, LocalInstance):
            return True
        return self.mme_support is None or it.name in self.mme_support.instance_types

    def gpu(self, key: str) -> GPU:
        if key.lower() == CPU:
            return cpu_device()
        try:
            return self.gpus[key.lower()]
        except KeyError:
            raise ConfigError(f"unknown GPU; known: {', '.join(self.gpus)}", field="gpu", value=key) from None

    def instance(self, name: str) -> InstanceType:
        if name == LOCAL:
            return local_instance()
        if not name.startswith("ml."):
            name = "ml." + name
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError(f"unknown instance type; known: {', '.join(self.instances)}, {LOCAL}",
                              field="instance_type", value=name) from None

    def gpu_of(self, instance: str | InstanceType) -> GPU:
        it = self.instance(instance) if isinstance(instance, str) else instance
        if isinstance(it, LocalInstance):
            return cpu_device(it.memory_budget_bytes)
        return self.gpu(it.gpu)

    def listed(self) -> list[InstanceType]:
        """Every instance type a user can name: the catalogue's, then ``local``."""
        return [*self.instances.values(), local_instance()]


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    data = yaml.safe_load(resources.files(__package__).joinpath("catalog.yaml").read_text())
    for key, gpu in data["gpus"].items():
        gpu.setdefault("key", key)
    for name, inst in data["instances"].items():
        inst.setdefault("name", name)
    catalog = validate(Catalog, data, source="mmesim/catalog/catalog.yaml")
    for inst in catalog.instances.values():
        catalog.gpu(inst.gpu)  # every instance names a known GPU
    unknown = set(catalog.mme_support.instance_types if catalog.mme_support else ()) - set(catalog.instances)
    if unknown:
        raise ConfigError("mme_support names instance types the catalogue lacks", source="mmesim/catalog/catalog.yaml",
                          field="mme_support.instance_types", value=sorted(unknown))
    return catalog


# --- the host mmesim runs on ----------------------------------------------------------------
LOCAL = "local"                   # the instance type naming this host
CPU = "cpu"                       # its "GPU": the host's cores, with a memory budget as NVML total
DEFAULT_BUDGET_FRACTION = 0.25    # a CPU host's memory budget unless one is given: a quarter of RAM


class HostCPU(GPU):
    """The host's processor standing in for a GPU on the CPU-only ``local`` instance: what
    NVML would report as total is the memory budget (``mmesim calibrate --device cpu``'s
    "total"). It has no GPU figures: GPU profiles are not translated onto it."""

    fp32_tflops: float | None = None
    fp16_tflops: float | None = None
    bandwidth_gbs: float | None = None
    budget_bytes: int = Field(gt=0)

    @property
    def nvml_total_bytes(self) -> int:
        return self.budget_bytes


class LocalInstance(InstanceType):
    """This host as an instance type: its cores and RAM, a memory budget, no price."""

    price_usd_per_hour: float = Field(default=0.0, ge=0)
    memory_budget_bytes: int = Field(gt=0, description="the memory models may fill, as a GPU's NVML total")


def host_cores() -> int:
    """Cores this process may run on (the affinity mask, as a container or taskset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_memory_bytes() -> int:
    """Physical RAM of the host."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        import psutil
        return int(psutil.virtual_memory().total)


def default_memory_budget() -> int:
    """The memory budget of a CPU host when none is given: the same for `mmesim calibrate
    --device cpu` (its max-models "total") and the ``local`` instance."""
    return int(host_memory_bytes() * DEFAULT_BUDGET_FRACTION)


def host_cpu() -> str:
    """The host processor's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_device(memory_budget_bytes: int | None = None) -> HostCPU:
    """The host's processor as the catalogue's device ``cpu``, with its memory budget."""
    budget = memory_budget_bytes or default_memory_budget()
    return HostCPU(key=CPU, name=f"host CPU ({host_cpu()})", memory_gib=budget / GiB,
                   nvml_total_mib=max(1, budget // MiB), nvml_verified=True, architecture=CPU, budget_bytes=budget)


def local_instance(memory_budget_bytes: int | None = None) -> LocalInstance:
    """The instance type ``local``: this host's cores (affinity mask) and RAM, free disk of
    the temporary folder, a memory budget (default: a quarter of RAM, as calibrate uses),
    device ``cpu``, price 0. cpu_speed is 1.0, the scale profiles measured here record, so
    their host-side costs run unchanged; loopback traffic is taken as 40 Gbit/s."""
    budget = memory_budget_bytes or default_memory_budget()
    return LocalInstance(
        name=LOCAL, gpu=CPU, vcpus=host_cores(), memory_gib=host_memory_bytes() / GiB, network_gbps=40,
        disk_gb=shutil.disk_usage(tempfile.gettempdir()).free / 1e9, disk_note="free space of the temporary folder",
        cpu=host_cpu(), cpu_speed=1.0, price_date=dt.date.today().isoformat(), price_verified=True,
        memory_budget_bytes=budget)
