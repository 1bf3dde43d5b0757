"""The Python backend's hand-off: per execution, the time Triton's model instance is held
while neither Triton nor the stub computes.

Triton passes each execution to the model's stub process through a shared-memory message
queue and waits on it (futex / condition-variable wake-ups both ways), so Triton's compute
time per execution (compute_input + compute_infer + compute_output, wall clock) is longer
than the CPU the stub spends on it. That difference holds the instance but uses no core:
processor sharing alone would not see it. Calibration measures it one execution at a time;
the probe (mmesim.loadtest.probe) at any load, which shows how it grows with the threads
runnable on the host (examples/request_cost.py)."""

from __future__ import annotations

import statistics


def sequential_handoff_s(service) -> float:
    """The profile's figure, from the calibration's executions one at a time (``measure_service``
    points with the stub's CPU read): the median of Triton's compute wall minus the stub's
    CPU at the smallest batch, where no core is contended; 0 when the stub's CPU was not read
    (GPU, native backends)."""
    first = service[0] if service else None
    if first is None or not first.cpu_s:
        return 0.0
    return max(0.0, statistics.median(w - c for w, c in zip(first.compute_s, first.cpu_s)))
