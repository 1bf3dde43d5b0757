"""The catalogue of GPUs and instance types, read from catalog.yaml (data, not code)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

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


class Catalog(Model):
    gpus: dict[str, GPU]
    instances: dict[str, InstanceType]
    price_source: str

    def gpu(self, key: str) -> GPU:
        try:
            return self.gpus[key.lower()]
        except KeyError:
            raise ConfigError(f"unknown GPU; known: {', '.join(self.gpus)}", field="gpu", value=key) from None

    def instance(self, name: str) -> InstanceType:
        if not name.startswith("ml."):
            name = "ml." + name
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError(f"unknown instance type; known: {', '.join(self.instances)}",
                              field="instance_type", value=name) from None

    def gpu_of(self, instance: str | InstanceType) -> GPU:
        it = self.instance(instance) if isinstance(instance, str) else instance
        return self.gpu(it.gpu)


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
    return catalog
