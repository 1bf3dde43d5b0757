"""One GPU shared by every model on an instance: processor sharing with partial overlap and
a ceiling.

k executions running at once each progress at ``S(k) / k`` of their solo speed, where S(k)
is the GPU's total throughput with k executions relative to one alone:

- a profile with a measured ``concurrency_scaling`` curve (k = 1, 2, 4, 8...) gives S by
  linear interpolation between its points, and flat beyond the last: a saturated GPU does
  no more work however many executions it holds (the ceiling);
- without one, S(k) = 1 + overlap (k - 1) from ``gpu_overlap``: overlap 0 means kernels of
  different executions take turns (S stays 1), overlap 1 means they run side by side.

With several models the slowest rate among the running ones applies, because the most
contended model sets the pace."""

from __future__ import annotations

from functools import lru_cache

from mmesim.profile import ModelProfile
from mmesim.sim.sharing import SharedProcessor


class Sharing:
    """How one profile's executions share the GPU: ``rate(k)`` of each among k running."""

    __slots__ = ("overlap", "curve", "_rates")

    def __init__(self, overlap: float, curve: tuple[tuple[int, float], ...] = ()):
        self.overlap, self.curve = overlap, curve
        self._rates: dict[int, float] = {}

    def total(self, k: int) -> float:
        """S(k): total throughput of k concurrent executions relative to one alone."""
        if not self.curve:
            return 1.0 + self.overlap * (k - 1)
        pts = self.curve
        base = pts[0][1]
        if k >= pts[-1][0]:
            return pts[-1][1] / base
        for (k0, s0), (k1, s1) in zip(pts, pts[1:]):
            if k <= k1:
                return (s0 + (k - k0) * (s1 - s0) / (k1 - k0)) / base
        return 1.0

    def rate(self, k: int) -> float:
        r = self._rates.get(k)
        if r is None:
            r = self._rates[k] = min(1.0, self.total(k) / k) if k > 1 else 1.0
        return r


@lru_cache(maxsize=None)
def _sharing(overlap: float, curve: tuple[tuple[int, float], ...]) -> Sharing:
    return Sharing(overlap, curve)


def sharing_of(profile: ModelProfile) -> Sharing:
    """One Sharing per distinct (overlap, curve), so equal profiles count as one tag."""
    return _sharing(profile.gpu_overlap, tuple((s.concurrent, s.throughput) for s in profile.concurrency_scaling))


class GPU(SharedProcessor):
    __slots__ = ()

    def tag(self, profile: ModelProfile) -> Sharing:
        """What a model's executions pass to ``run``."""
        return sharing_of(profile)

    def _rate(self) -> float:
        k = len(self._heap)
        if k <= 1:
            return 1.0
        tags = self._tags
        if len(tags) == 1:
            for t in tags:
                return t.rate(k)
        return min(t.rate(k) for t in tags)
