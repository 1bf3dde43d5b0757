"""The platform's decisions, shared by the simulator and the emulator: how much memory an
instance lets models fill, which loaded models to unload to make room, and which instance
a request goes to. Pure functions: the simulated Instance and the emulator's platform call
the same code, so an emulated endpoint decides exactly as a predicted one."""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence, TypeVar

T = TypeVar("T")


def memory_budget(total_bytes: int, threshold: float) -> int:
    """Bytes models may fill on an instance whose GPU reports ``total_bytes`` (NVML total):
    SageMaker unloads models once memory use passes ``threshold`` of it (0.90 by default)."""
    return int(threshold * total_bytes)


def inflight_limit(configured: int | None, profiles) -> int | None:
    """Requests in flight per instance beyond which it sheds load (ServiceUnavailable): the
    endpoint's setting, else the smallest limit among the profiles, else none."""
    limits = [p.max_inflight for p in profiles if p.max_inflight]
    return configured or (min(limits) if limits else None)


def ready_wait_s(ready_timeout_s: float, invocation_timeout_s: float) -> float:
    """How long a request waits for its model's load before it fails with
    ModelNotReadyException (the load goes on): the model ready timeout, or the invocation
    timeout if that comes first."""
    return min(ready_timeout_s, invocation_timeout_s)


def lru_victims(loaded: Iterable[tuple[T, int, bool]], committed: int, need: int, budget: int) -> list[T] | None:
    """Models to unload so that ``need`` more bytes fit in ``budget``.

    ``loaded`` yields (model, resident bytes, idle) least recently used first; ``committed``
    is what is resident or on its way now. Only idle models (no request admitted and
    unfinished) are chosen, least recently used first, and no more than needed. Returns []
    when it fits already, None when even unloading every idle model would not make room."""
    if committed + need <= budget:
        return []
    victims, freed = [], 0
    for model, size, idle in loaded:
        if idle:
            victims.append(model)
            freed += size
            if committed - freed + need <= budget:
                return victims
    return None


class Routable(Protocol):
    inflight: int            # requests admitted and unfinished
    committed: int           # memory resident or on its way

    def holds(self, model) -> bool:
        """The model is loaded or on its way (downloading, loading) here."""


def route(instances: Sequence[Routable], model, spread_inflight: int) -> Routable:
    """The instance for a request: the least busy one that holds the model; a hot model
    spreads to another instance once its least busy holder has ``spread_inflight`` in
    flight and another is less busy. A model held nowhere goes to the least busy instance,
    the one with the least memory committed among equals."""
    if len(instances) == 1:
        return instances[0]
    best = None
    for inst in instances:
        if inst.holds(model) and (best is None or inst.inflight < best.inflight):
            best = inst
    if best is not None and best.inflight < spread_inflight:
        return best
    least = None              # the first with the fewest (in flight, committed), best aside
    for inst in instances:
        if inst is best:
            continue
        if least is None:
            least = inst
            continue
        d = inst.inflight - least.inflight
        if d < 0 or d == 0 and inst.committed < least.committed:
            least = inst
    return least if best is None or least.inflight < best.inflight else best
