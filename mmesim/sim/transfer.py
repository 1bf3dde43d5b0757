"""A bandwidth shared by the transfers in progress (a disk, a network link, PCIe).

Processor sharing with a per-transfer cap: with n transfers in progress each moves at
min(``per_transfer``, ``total`` / n) bytes a second, so one alone is as fast as it can be,
and together they never move more than ``total``. One timer is pending, for the transfer
that finishes first; it is recomputed whenever a transfer starts or ends."""

from __future__ import annotations

from mmesim.sim.events import after

_DONE_BYTES = 1.0       # remaining bytes that count as finished (float arithmetic on GB sizes)


class Transfer:
    __slots__ = ("left", "value", "callback", "started")

    def __init__(self, left: float, value, callback, started: float):
        self.left, self.value, self.callback, self.started = left, value, callback, started


class SharedRate:
    def __init__(self, env, total: float, per_transfer: float = float("inf")):
        self.env, self.total, self.per_transfer = env, total, per_transfer
        self.active: list[Transfer] = []
        self.moved = 0.0              # bytes moved so far, all transfers together
        self._since = 0.0             # when ``left`` was last brought up to date
        self._timer = None

    def rate(self) -> float:
        """Bytes a second each transfer in progress moves now."""
        n = len(self.active)
        return min(self.per_transfer, self.total / n) if n else 0.0

    def start(self, nbytes: float, value, callback) -> None:
        """Move ``nbytes``; then ``callback(value, seconds it took)``."""
        self._advance()
        self.active.append(Transfer(float(nbytes), value, callback, self.env.now))
        self._schedule()

    def _advance(self) -> None:
        now = self.env.now
        moved = self.rate() * (now - self._since)
        if moved:
            for t in self.active:
                t.left -= moved
            self.moved += moved * len(self.active)
        self._since = now

    def _schedule(self) -> None:
        self._timer = None
        if self.active:
            first = min(t.left for t in self.active)
            self._timer = after(self.env, max(0.0, first) / self.rate(), None, self._tick)

    def _tick(self, ev) -> None:
        if ev is not self._timer:         # superseded by a later start
            return
        self._advance()
        done = [t for t in self.active if t.left <= _DONE_BYTES]
        if not done:                      # rounding: the first is within a hair of the end
            done = [min(self.active, key=lambda t: t.left)]
        self.active = [t for t in self.active if t not in done]
        self._schedule()
        now = self.env.now
        for t in done:
            t.callback(t.value, now - t.started)
