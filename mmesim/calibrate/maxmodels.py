"""The reference's "max models loaded" procedure, against a real server: load copies of one
artifact (name-v0, name-v1, ...) one at a time, read memory after each, and stop when
(used + average per model) / total >= threshold, where average = used / models loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmesim.triton.client import MMEClient, MMEError
from mmesim.units import MiB


@dataclass
class Step:
    models: int
    used: int
    total: int
    load_s: float

    @property
    def fraction(self) -> float:
        return self.used / self.total


@dataclass
class MaxModels:
    count: int
    threshold: float
    trace: list[Step] = field(default_factory=list)
    stopped_by: str = "threshold"        # threshold | out of memory (507) | copy limit

    def table(self) -> str:
        lines = [f"{'models':>6} {'used MiB':>10} {'used %':>7} {'load s':>7}"]
        for s in self.trace:
            lines.append(f"{s.models:>6} {s.used / MiB:>10.0f} {100 * s.fraction:>6.1f}% {s.load_s:>7.2f}")
        return "\n".join(lines)


def copy_name(base: str, i: int) -> str:
    return f"{base}-v{i}"


def max_models_loaded(load_copy: Callable[[int], float], sample, threshold: float = 0.9,
                      max_copies: int = 200, on_step: Callable[[Step], None] | None = None) -> MaxModels:
    """``load_copy(i)`` loads copy i and returns its load seconds; ``sample()`` reads memory.
    Copies stay loaded: the caller unloads them."""
    result = MaxModels(0, threshold)
    while True:
        if result.count >= max_copies:
            result.stopped_by = "copy limit"
            return result
        try:
            seconds = load_copy(result.count)
        except MMEError as exc:
            if exc.status == 507:
                result.stopped_by = "out of memory (507)"
                return result
            raise
        result.count += 1
        mem = sample()
        step = Step(result.count, mem.used, mem.total, seconds)
        result.trace.append(step)
        if on_step:
            on_step(step)
        average = mem.used / result.count
        if (mem.used + average) / mem.total >= threshold:
            return result


def mme_copy_loader(client: MMEClient, packaged, server, workdir: Path, base: str) -> Callable[[int], float]:
    """Extract the artifact for copy i (as SageMaker does) and load it through the MME protocol."""
    def load(i: int) -> float:
        url = packaged.extract(workdir / copy_name(base, i))
        return client.load(copy_name(base, i), server.model_url(url))
    return load
