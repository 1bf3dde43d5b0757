"""Reading memory while models load: device memory through NVML on a GPU, the resident
memory of the server's process tree through psutil on a CPU.

On a CPU the tree's PSS (proportional set size) adds up to what the tree really occupies:
shared libraries (torch, loaded once per stub but mapped by all) are split between the
processes that map them. A copy's own cost is the private memory it wrote (its processes'
dirty private pages and swap, plus what the server itself grew by), not their USS: the USS
also counts a library's clean pages while no other process on the machine maps that library,
so it moves with the neighbours. A Python-backend stub that imports torch read 205.7 MiB of
USS alone and 148.0 MiB while another process had torch imported, 147.9 MiB dirty either way
(2026-12-07); a calibration's null model and its copies, read at different moments of a busy
machine, had come out 10 MiB apart the wrong way round. Clean library pages are paid once per
machine, so they belong to the baseline, which is what the tree uses beyond its copies.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager

from dataclasses import dataclass, field

from mmesim.errors import ConfigError, MissingPiece
from mmesim.units import GiB, KiB, MiB, TiB

from mmesim.catalog import default_memory_budget


@dataclass
class MemorySample:
    """One reading: ``used`` is what the max-models rule divides by ``total``."""

    used: int
    total: int
    processes: dict[int, int] = field(default_factory=dict)    # pid -> own bytes (private written, or NVML's)


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
                pss, private = private_memory(proc.pid)
            except OSError:     # no smaps_rollup (not Linux, or a kernel before 4.14): psutil's USS
                try:
                    info = proc.memory_full_info()
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                    continue
                pss, private = getattr(info, "pss", info.rss), getattr(info, "uss", info.rss)
            used += pss
            own[proc.pid] = private
        return MemorySample(used, self.total, own)


def private_memory(pid: int) -> tuple[int, int]:
    """(PSS, private memory written) of one process from /proc/PID/smaps_rollup: the second is
    its dirty private pages and swap, which no other process's mappings move (the module's
    docstring says why not the USS)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * KiB
    if "Pss" not in fields or "Private_Dirty" not in fields:
        raise OSError(f"/proc/{pid}/smaps_rollup has no Pss or Private_Dirty")
    return fields["Pss"] + fields.get("SwapPss", 0), fields["Private_Dirty"] + fields.get("Swap", 0)


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


# --- after an unload ---------------------------------------------------------------------------
def model_stubs(server_pid: int | None, names) -> list:
    """The Python-backend stub processes serving models ``names`` under a local server: each
    stub is started with its instance's name, ``<model>_<group>_<instance>``, among its
    arguments. Empty where the server is not a local process (a container) or has none."""
    if not server_pid:
        return []
    import psutil
    wanted = [re.compile(re.escape(n) + r"_\d+_\d+") for n in names]
    found = []
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.Error:
        return []
    for proc in children:
        try:
            args = proc.cmdline()
        except psutil.Error:
            continue
        if any(w.fullmatch(a) for a in args for w in wanted):
            found.append(proc)
    return found


@contextmanager
def unloading(server_pid: int | None, names, probe=None):
    """Around the DELETEs of models ``names``: their stubs found before, and on leaving, the
    unload over (``settle_unload``)."""
    stubs = model_stubs(server_pid, names)
    yield
    settle_unload(stubs, probe)


def settle_unload(stubs: list, probe=None, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Wait until an unload is over: Triton answers the DELETE before the model's stub process
    has exited (a few ms on an idle host, longer on a busy one), and a device has its memory back
    only once the process that held a CUDA context is gone. A memory reading in between counts
    the unloaded model: the next copy's device memory would read a context short, a "leak" would
    be a whole stub. So: every stub in ``stubs`` (``model_stubs`` before the unload) exited, then,
    for a probe that reads one figure for the whole device or container, that figure still for
    two readings in a row (within 1 MiB; 5 s at most). Gives up after ``timeout_s`` (the reading
    then is what it is)."""
    import psutil

    def gone(proc) -> bool:    # exited, or a zombie its server has not reaped yet (it holds no memory)
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    deadline = time.monotonic() + timeout_s
    while not all(gone(p) for p in stubs):
        if time.monotonic() > deadline:
            return
        time.sleep(interval_s)
    if probe is None or isinstance(probe, HostMemory):
        return
    deadline = min(deadline, time.monotonic() + 5.0)
    last = probe.sample().used
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        now = probe.sample().used
        if abs(now - last) <= MiB:
            return
        last = now
