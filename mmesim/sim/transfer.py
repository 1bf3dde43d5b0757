"""A bandwidth shared by the transfers in progress (a disk, a network link, PCIe, or the
host's vCPUs, whose "bytes" are CPU-seconds and whose per-transfer cap is one core).

Processor sharing with a per-transfer cap: with n transfers in progress each moves at
min(``per_transfer``, ``total`` / n) bytes a second, so one alone is as fast as it can be,
and together they never move more than ``total``. All transfers in progress move at the
same rate, so one counter (the bytes each has moved since the link was made) places every
transfer's end on one heap: starting or finishing one costs O(log n). One timer is
pending, for the transfer that finishes first."""

from __future__ import annotations

from heapq import heappop, heappush
from itertools import count

from mmesim.sim.events import after


class SharedRate:
    def __init__(self, env, total: float, per_transfer: float = float("inf")):
        self.env, self.total, self.per_transfer = env, total, per_transfer
        self.moved = 0.0              # bytes moved so far, all transfers together
        self._ends: list = []         # (counter value at which it is done, seq, started, value, callback)
        self._counter = 0.0           # bytes each transfer in progress has moved since the link was made
        self._since = 0.0             # when the counter was last brought up to date
        self._seq = count()
        self._timer = None
        self._rate = 0.0              # what each transfer in progress moves a second (while any is)
        self._done_within = total * 1e-9  # what is left after a nanosecond's worth counts as done

    def rate(self) -> float:
        """Bytes a second each transfer in progress moves now."""
        return self._rate if self._ends else 0.0

    def _rate_for(self, n: int) -> float:
        share = self.total / n
        return share if share < self.per_transfer else self.per_transfer

    def start(self, nbytes: float, value, callback) -> None:
        """Move ``nbytes``; then ``callback(value, seconds it took)``."""
        self._advance()
        ends, rate, seq = self._ends, self.rate(), next(self._seq)
        heappush(ends, (self._counter + nbytes, seq, self.env.now, value, callback))
        self._rate = self._rate_for(len(ends))
        if self._timer is not None and ends[0][1] != seq and self._rate == rate:
            return            # the first to finish and the rate are unchanged: so is its timer
        self._schedule()

    def _advance(self) -> None:
        now = self.env.now
        if self._ends and now > self._since:
            step = self._rate * (now - self._since)
            self._counter += step
            self.moved += step * len(self._ends)
        self._since = now

    def _schedule(self) -> None:
        self._timer = None
        if self._ends:
            left = self._ends[0][0] - self._counter
            self._timer = after(self.env, (left if left > 0 else 0.0) / self._rate, None, self._tick)

    def _tick(self, ev) -> None:
        if ev is not self._timer:         # superseded by a later start
            return
        self._advance()
        ends, done = self._ends, [heappop(self._ends)]   # the one the timer was for
        while ends and ends[0][0] - self._counter <= self._done_within:
            done.append(heappop(ends))
        if ends:
            self._rate = self._rate_for(len(ends))
        self._schedule()
        now = self.env.now
        for _, _, started, value, callback in done:
            callback(value, now - started)
