"""The memory users run out of: what one execution needs above the loaded copy (working
memory, by batch size), what a load/unload cycle leaves behind (leak), and how long the
model itself takes to unload.

- Working memory, on a freshly loaded copy (its resident bytes are what the profile's
  gpu_memory_bytes counts): on a GPU, NVML's used memory sampled every millisecond while it
  executes batch sizes smallest first, peak above the level right after the load; on a CPU,
  the kernel's own peak counter of the server's process tree (VmHWM, reset through
  /proc/PID/clear_refs after the load) above the tree's resident bytes (VmRSS) then. Each
  reading counts what the copy keeps after executing too (allocator caches), as a device
  with no room left would have to hold it.
- Leak: one copy loaded and unloaded N times; the memory used after the last cycle less the
  memory used after the first (the first pays one-off costs: imports, allocator pools).
- Unload: the server's SageMaker front polls the model's state every 500 ms, so the HTTP
  DELETE takes a multiple of it. Triton's log (verbose level 1, switched on through its
  logging API for the cycles only) stamps the request ("Unloading SageMaker TargetModel")
  and the model's end ("successfully unloaded"), to the microsecond: the model's own time.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmesim.calibrate.memory import HostMemory, NvmlMemory
from mmesim.units import MiB

_STAMP = r"I(\d{4}) (\d\d:\d\d:\d\d\.\d{6}) +\d+ [^\]]+\] \""


@dataclass
class WorkingPoint:
    """Peak bytes above resident while executions of ``batch`` ran."""

    batch: int
    bytes: int
    before_bytes: int
    peak_bytes: int


@dataclass
class Cycles:
    """A copy loaded and unloaded ``len(used)`` times."""

    used: list[int]                     # memory used after each unload
    unload_s: list[float]               # the model's own unload, from the server's log (None: not readable)
    http_unload_s: list[float]          # the DELETE request as the client timed it (the server's polling)
    how: str

    @property
    def leak_per_cycle(self) -> int:
        """Bytes a cycle leaves behind, from the growth after the first cycle (0 if memory fell)."""
        if len(self.used) < 2:
            return 0
        return max(0, (self.used[-1] - self.used[0]) // (len(self.used) - 1))


@dataclass
class Working:
    points: list[WorkingPoint]
    how: str
    cycles: Cycles | None = None
    notes: list[str] = field(default_factory=list)


# --- peak readers ----------------------------------------------------------------------------
class TreePeak:
    """The kernel's peak resident set (VmHWM) of a process tree, reset on demand: what the
    tree's execution took at its highest, without sampling."""

    def __init__(self, pid: int):
        import psutil
        self._psutil, self.pid = psutil, pid

    def _pids(self) -> list[int]:
        root = self._psutil.Process(self.pid)
        return [root.pid, *(p.pid for p in root.children(recursive=True))]

    @staticmethod
    def _status(pid: int, key: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def reset(self) -> int:
        """Reset every process's peak to its current resident set; returns the tree's resident bytes."""
        total = 0
        for pid in self._pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                total += self._status(pid, "VmRSS")
            except OSError:
                continue
        return total

    def peak(self) -> int:
        total = 0
        for pid in self._pids():
            try:
                total += self._status(pid, "VmHWM")
            except OSError:
                continue
        return total


class SampledPeak:
    """NVML's used memory sampled in a thread every ``interval_s``; the highest since reset."""

    def __init__(self, probe: NvmlMemory, interval_s: float = 0.001):
        self.probe, self.interval_s = probe, interval_s
        self._high = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> int:
        self.stop()
        now = self.probe.sample().used
        self._high = now
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            self._high = max(self._high, self.probe.sample().used)
            time.sleep(self.interval_s)

    def peak(self) -> int:
        return self._high

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


def peak_reader(probe, server_pid: int | None):
    """(reader, how) for this bench: NVML on a GPU, the tree's VmHWM on a local CPU run, or
    None where neither can be read (a CPU run in a container)."""
    if isinstance(probe, NvmlMemory):
        return SampledPeak(probe), ("NVML used memory sampled every 1 ms while a fresh copy executed, peak above its "
                                    "level after the load")
    if isinstance(probe, HostMemory) and server_pid and Path(f"/proc/{server_pid}/clear_refs").exists():
        return TreePeak(server_pid), ("peak resident set of the server's process tree (the kernel's VmHWM, reset "
                                      "through /proc/PID/clear_refs) while a fresh copy executed, above its "
                                      "resident set after the load")
    return None, "not measured: no peak counter readable for this runner"


# --- measurements ------------------------------------------------------------------------------
def measure_working(reader, invoke: Callable[[int], None], batches: list[int], repeats: int = 2) -> list[WorkingPoint]:
    """Working memory by batch size on a copy that has not executed yet: the peak since the
    copy was loaded, read after ``repeats`` executions at each size, smallest first. A copy's
    resident bytes are measured right after its load; what its executions then take (and
    the allocator keeps) is what the capacity rule does not see."""
    before = reader.reset()
    points = []
    for batch in batches:
        for _ in range(repeats):
            invoke(batch)
        peak = reader.peak()
        points.append(WorkingPoint(batch, max(0, peak - before), before, peak))
    return points


def largest(runs: list[list[WorkingPoint]]) -> list[WorkingPoint]:
    """Per batch size, the largest of the cycles' readings, made non-decreasing in the batch
    (a larger batch needs at least what a smaller one did: the readings carry a page or two of noise)."""
    if not runs:
        return []
    out, high = [], 0
    for points in zip(*runs):
        top = max(points, key=lambda p: p.bytes)
        high = max(high, top.bytes)
        out.append(WorkingPoint(top.batch, high, top.before_bytes, top.peak_bytes))
    return out


def unload_seconds(log: str, name: str, year: int | None = None) -> float | None:
    """The model's own unload in Triton's log: from the SageMaker front's "Unloading
    SageMaker TargetModel: <name>" to the lifecycle's "successfully unloaded '<name>'" (the
    last of each); None if either line is missing (log level below 1)."""
    starts = re.findall(_STAMP + r"Unloading SageMaker TargetModel: " + re.escape(name) + r"\b", log)
    ends = re.findall(_STAMP + r"successfully unloaded '" + re.escape(name) + "'", log)
    if not starts or not ends:
        return None
    year = year or dt.date.today().year

    def when(md: str, hms: str) -> dt.datetime:
        return dt.datetime.strptime(f"{year}{md} {hms}", "%Y%m%d %H:%M:%S.%f")

    seconds = (when(*ends[-1]) - when(*starts[-1])).total_seconds()
    if seconds < 0:                     # across midnight
        seconds += 86400
    return seconds


def measure_cycles(load: Callable[[str], float], unload: Callable[[str], float], used: Callable[[], int],
                   read_log: Callable[[], str] | None, name: str, cycles: int,
                   working: Callable[[str], list[WorkingPoint]] | None = None) -> tuple[Cycles, list[WorkingPoint]]:
    """Load and unload one copy ``cycles`` times under fresh names (as an MME does with new
    target models): memory used after each unload, each unload's own time, and (with
    ``working``) each fresh copy's working memory before it is unloaded."""
    after, own, http, runs = [], [], [], []
    for i in range(cycles):
        copy = f"{name}-cycle{i}"
        load(copy)
        if working is not None:
            runs.append(working(copy))
        http.append(unload(copy))
        after.append(used())
        seconds = unload_seconds(read_log(), copy) if read_log else None
        if seconds is not None:
            own.append(seconds)
    how = ("the model's own unload from Triton's log (request received to 'successfully unloaded')" if own else
           "the DELETE request as timed by the client (includes the server's 500 ms polls: no log readable)")
    return Cycles(after, own or http, http, how), largest(runs)


def summary_notes(w: Working) -> str:
    """One line for the profile's memory_source: how each figure was taken."""
    parts = [f"working memory: {w.how}"]
    if w.points:
        parts[0] += " (" + ", ".join(f"batch {p.batch}: {p.bytes / MiB:.1f} MiB" for p in w.points) + ")"
    if w.cycles:
        c = w.cycles
        parts.append(f"leak: memory after {len(c.used)} load/unload cycles of one copy (on a host, the server "
                     f"tree's private bytes), growth after the first "
                     f"per cycle = {c.leak_per_cycle / MiB:.2f} MiB (after each: "
                     + ", ".join(f"{u / MiB:.0f}" for u in c.used) + " MiB)")
        parts.append(f"unload {statistics.fmean(c.unload_s):.3f} s: {c.how}; the DELETE took "
                     f"{statistics.fmean(c.http_unload_s):.3f} s")
    return "; ".join(parts + w.notes)


def left_behind(probe) -> int:
    """The memory a load/unload cycle can leave behind, as ``probe`` reads it: on a host, the
    server tree's private memory written (HostMemory), not its proportional share (PSS), since
    its share of the shared libraries moves whenever other processes map or unmap the same
    libraries (other Tritons' torch-loaded stubs in a parallel test suite moved it by 6 MiB a
    cycle); on a device or in a container, the memory used."""
    sample = probe.sample()
    return sum(sample.processes.values()) if isinstance(probe, HostMemory) and sample.processes else sample.used


def measure_bench(bench, batches: list[int], cycles: int, progress: Callable[[str], None]) -> Working:
    """Both measurements on a calibration bench (mmesim.calibrate.run.Bench): ``cycles``
    load/unload cycles of one more copy, each fresh copy executing ``batches`` (smallest
    first) while its peak memory is read."""
    reader, how = peak_reader(bench.probe, bench.server_pid)
    result = Working([], how)
    if cycles <= 0:
        return result
    progress(f"{cycles} load/unload cycles of one copy: working memory at batch sizes {batches}, memory left "
             "behind, the model's own unload time")
    log_path = getattr(bench.server, "log_path", None)
    read_log = None
    if log_path is not None:
        try:
            bench.kserve.update_log_settings({"log_verbose_level": 1})
            read_log = lambda: Path(log_path).read_text(errors="replace")    # noqa: E731
        except Exception as exc:        # a server without the logging extension: client timing
            result.notes.append(f"log level not settable ({exc})")
    spec = bench.spec

    def work(copy: str) -> list[WorkingPoint]:
        return measure_working(reader, lambda b: bench.mme.invoke(copy, *spec.binary_body(b)), batches)

    try:
        result.cycles, result.points = measure_cycles(
            bench.load_copy, bench.unload, lambda: left_behind(bench.probe), read_log, spec.name, cycles,
            work if reader is not None and batches else None)
    finally:
        if read_log is not None:
            bench.kserve.update_log_settings({"log_verbose_level": 0})
        if isinstance(reader, SampledPeak):
            reader.stop()
    return result
