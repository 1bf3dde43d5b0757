"""Reading memory while models load: device memory through NVML on a GPU, the resident
memory of the server's process tree through psutil on a CPU.

On a CPU the tree's PSS (proportional set size) adds up to what the tree really occupies:
shared libraries (torch, loaded once per stub but mapped by all) are split between the
processes that map them. A copy's own cost is the USS (unique pages) of the processes it
added, plus what the server itself grew by.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from mmesim.errors import ConfigError, MissingPiece
from mmesim.units import GiB, KiB, MiB, TiB

from mmesim.catalog import default_memory_budget


@dataclass
class MemorySample:
    """One reading: ``used`` is what the max-models rule divides by ``total``."""

    used: int
    total: int
    processes: dict[int, int] = field(default_factory=dict)    # pid -> own bytes (USS, or NVML per process)


class HostMemory:
    """The process tree of a local tritonserver (server + Python-backend stubs)."""

    device = "cpu"

    def __init__(self, pid: int, budget_bytes: int | None = None):
        import psutil
        self._psutil = psutil
        self.pid = pid
        self.total = budget_bytes or default_memory_budget()

    def _tree(self):
        root = self._psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def sample(self) -> MemorySample:
        used, own = 0, {}
        for proc in self._tree():
            try:
                info = proc.memory_full_info()
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            used += getattr(info, "pss", info.rss)
            own[proc.pid] = getattr(info, "uss", info.rss)
        return MemorySample(used, self.total, own)


class ContainerMemory:
    """A container's cgroup memory (CPU runs through Docker): no per-process split."""

    device = "cpu"

    def __init__(self, server, budget_bytes: int | None = None):
        self.server = server
        self.total = budget_bytes or default_memory_budget()

    def sample(self) -> MemorySample:
        return MemorySample(self.server.memory_bytes(), self.total, {})


class NvmlMemory:
    """Device memory of one GPU: used/total as NVML (nvidia-smi) reports them, and per process."""

    def __init__(self, index: int = 0, cap_bytes: int | None = None):
        """``cap_bytes``: a smaller "total" for the max-models rule, so a large GPU stops early."""
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception as exc:
            raise MissingPiece(f"NVML is not available ({exc}): measuring GPU memory needs an NVIDIA driver and the "
                               "nvidia-ml-py package; on a machine without a GPU use --device cpu") from None
        self._nvml = pynvml
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            raise MissingPiece(f"no GPU {index} ({exc}); this machine has {pynvml.nvmlDeviceGetCount()} GPU(s)") from None
        self.index = index
        self.device_total = int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).total)
        self.total = min(self.device_total, cap_bytes or self.device_total)
        name = pynvml.nvmlDeviceGetName(self.handle)
        self.device = name.decode() if isinstance(name, bytes) else name
        driver = pynvml.nvmlSystemGetDriverVersion()
        self.driver = driver.decode() if isinstance(driver, bytes) else driver

    def busy_percent(self) -> float:
        """NVML's GPU utilisation: the percent of its last sample period (1/6 s to 1 s, by
        device) in which a kernel ran, what CloudWatch's GPUUtilization reports."""
        return float(self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def sample(self) -> MemorySample:
        info = self._nvml.nvmlDeviceGetMemoryInfo(self.handle)
        procs = {}
        try:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.usedGpuMemory is not None:
                    procs[p.pid] = int(p.usedGpuMemory)
        except Exception:
            pass
        return MemorySample(int(info.used), self.total, procs)


def parse_bytes(text: str | int | None, field: str = "--memory-budget") -> int | None:
    """``4GiB``, ``512MiB``, ``2G``, ``1.5e9`` -> bytes; a ConfigError naming ``field`` for
    anything else (words, NaN, infinity, less than one byte)."""
    if text is None or isinstance(text, int):
        return text
    units = {"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB, "kb": 10**3, "mb": 10**6, "gb": 10**9,
             "k": KiB, "m": MiB, "g": GiB, "b": 1, "": 1}
    s = str(text).strip().lower().replace(" ", "")
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            try:
                value = float(s[: len(s) - len(unit)] if unit else s) * units[unit]
            except ValueError:
                break
            if not math.isfinite(value) or value < 1:
                break
            return int(value)
    raise ConfigError("expected a size such as 4GiB, 512MiB or 2000000000", field=field, value=text)


def cuda_index(device: str) -> int:
    if device in ("cuda", "gpu"):
        return 0
    try:
        return int(device.split(":", 1)[1])
    except (IndexError, ValueError):
        raise ConfigError("expected cpu, cuda or cuda:N", field="--device", value=device) from None
