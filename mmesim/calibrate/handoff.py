"""The Python backend's hand-off: per execution, the time Triton's model instance is held
while neither Triton nor the stub computes.

Triton passes each execution to the model's stub process through a shared-memory message
queue and waits on it (futex / condition-variable wake-ups both ways), so Triton's compute
time per execution (compute_input + compute_infer + compute_output, wall clock) is longer
than the CPU the stub spends on it. That difference holds the instance but uses no core:
processor sharing alone would not see it. Measured with k closed-loop clients on k copies
(one stub each) at once, so it shows whether the wait grows with the threads runnable on the
host (a wake-up waiting for a core) or stays put (a fixed latency)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from mmesim.calibrate.latency import _closed_loop, process_cpu_s, stub_pid
from mmesim.triton.client import model_timings
from mmesim.triton.modelspec import ModelSpec


@dataclass
class HandoffPoint:
    concurrent: int        # copies executing at once, one client each
    executions: int
    compute_s: float       # Triton's compute wall clock per execution
    stub_cpu_s: float      # the stubs' CPU per execution
    busy_cores: float      # cores the whole machine kept busy meanwhile

    @property
    def handoff_s(self) -> float:
        return max(0.0, self.compute_s - self.stub_cpu_s)


def _machine_busy_s() -> float:
    import psutil
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def measure_handoff(base_url: str, kserve, server_pid: int, names: list[str], spec: ModelSpec,
                    ks: tuple[int, ...] = (1, 2, 4), seconds: float = 2.0, batch: int = 1) -> list[HandoffPoint]:
    """For each k in ``ks``: one client on each of k copies (``names``, loaded; one-thread
    Python-backend stubs) for ``seconds``; Triton's compute per execution against the stubs'
    CPU per execution."""
    body, ctype = spec.binary_body(batch)
    stubs = {n: stub_pid(server_pid, n) for n in names[:max(ks)]}
    missing = [n for n, p in stubs.items() if p is None]
    if missing:
        raise RuntimeError(f"no Python-backend stub process found for {', '.join(missing)}")
    _closed_loop(base_url, list(stubs), body, ctype, 1, 4 * len(stubs), 0.0)     # warm every copy
    points = []
    for k in ks:
        targets = list(stubs)[:k]
        before = [model_timings(kserve, n) for n in targets]
        cpu0, busy0, t0 = sum(process_cpu_s(stubs[n]) for n in targets), _machine_busy_s(), time.monotonic()
        _closed_loop(base_url, targets, body, ctype, 1, 0, seconds)
        cpu = sum(process_cpu_s(stubs[n]) for n in targets) - cpu0
        busy, wall = _machine_busy_s() - busy0, time.monotonic() - t0
        deltas = [model_timings(kserve, n) - b for n, b in zip(targets, before)]
        execs = max(1, sum(d.executions for d in deltas))
        points.append(HandoffPoint(k, execs, sum(d.compute_s for d in deltas) / execs, cpu / execs, busy / wall))
    return points


def handoff_note(points: list[HandoffPoint]) -> str:
    """One line for a profile's provenance."""
    return "python-backend hand-off (Triton's compute wall minus the stub's CPU per execution, batch 1): " + ", ".join(
        f"{p.concurrent} at once -> {p.handoff_s * 1e3:.2f} ms ({p.compute_s * 1e3:.2f} - {p.stub_cpu_s * 1e3:.2f}; "
        f"{p.busy_cores:.2f} cores busy)" for p in points)


def sequential_handoff_s(service) -> float:
    """The profile's figure, from the calibration's executions one at a time (``measure_service``
    points with the stub's CPU read): the median of Triton's compute wall minus the stub's
    CPU at the smallest batch, where no core is contended; 0 when the stub's CPU was not read
    (GPU, native backends)."""
    first = service[0] if service else None
    if first is None or not first.cpu_s:
        return 0.0
    return max(0.0, statistics.median(w - c for w, c in zip(first.compute_s, first.cpu_s)))
