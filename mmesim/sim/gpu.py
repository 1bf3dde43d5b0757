"""One GPU shared by every model on an instance: processor sharing with partial overlap.

An execution that would take ``work`` seconds alone progresses at rate
``(1 + overlap * (k - 1)) / k`` while k executions run together: overlap 0 means kernels
of different executions take turns (the GPU's total throughput stays 1), overlap 1 means
they run side by side without slowing each other. The overlap comes from the profiles
(calibrate measures it); with several models the smallest overlap among the running ones
applies, because the most contended model sets the pace.

All running executions progress at the same rate, so the GPU keeps one "virtual work"
clock: an execution finishes when the clock reaches its start reading plus its work. A
heap of those finishing readings makes each start and finish O(log k)."""

from __future__ import annotations

import heapq
from typing import Callable

import simpy

from mmesim.sim.events import after


class GPU:
    __slots__ = ("env", "_heap", "_overlaps", "_virtual", "_last", "_gen", "_seq", "_speed", "busy_s", "_busy_since")

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._heap: list = []                  # (virtual finish, seq, callback, arg, overlap)
        self._overlaps: dict[float, int] = {}  # overlap -> running executions with it
        self._virtual = 0.0
        self._last = 0.0
        self._gen = 0
        self._seq = 0
        self._speed = 1.0                      # progress rate of each running execution, until the next change
        self.busy_s = 0.0
        self._busy_since = 0.0

    def _rate(self) -> float:
        k = len(self._heap)
        if k <= 1:
            return 1.0
        overlaps = self._overlaps
        overlap = next(iter(overlaps)) if len(overlaps) == 1 else min(overlaps)
        return (1.0 + overlap * (k - 1)) / k

    def _advance(self) -> None:
        now = self.env.now
        if self._heap:
            self._virtual += (now - self._last) * self._speed
        self._last = now

    def run(self, work: float, overlap: float, callback: Callable, arg) -> None:
        """Start an execution of ``work`` solo-seconds; ``callback(arg)`` when it finishes."""
        self._advance()
        if not self._heap:
            self._busy_since = self.env.now
        self._seq += 1
        heapq.heappush(self._heap, (self._virtual + work, self._seq, callback, arg, overlap))
        self._overlaps[overlap] = self._overlaps.get(overlap, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        """After the set of executions changed: new speed, and the next finish."""
        self._gen += 1
        self._speed = self._rate()
        if self._heap:
            delay = (self._heap[0][0] - self._virtual) / self._speed
            after(self.env, delay if delay > 0 else 0.0, self._gen, self._finish)

    def _finish(self, ev) -> None:
        if ev._value != self._gen:   # the set of executions changed since: a newer finish is scheduled
            return
        self._advance()
        _, _, callback, arg, overlap = heapq.heappop(self._heap)
        left = self._overlaps[overlap] - 1
        if left:
            self._overlaps[overlap] = left
        else:
            del self._overlaps[overlap]
        if not self._heap:
            self.busy_s += self.env.now - self._busy_since
        self._schedule()
        callback(arg)

    def busy_until_now(self) -> float:
        return self.busy_s + (self.env.now - self._busy_since if self._heap else 0.0)
