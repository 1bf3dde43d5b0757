"""Processor sharing with one common rate: the GPU and a CPU-only host's cores both run
every started job at once, all of them progressing at the same rate, which depends only on
what runs (subclasses say how: ``_rate``).

Since every running job progresses at the same rate, the processor keeps one "virtual
work" clock: a job finishes when the clock reaches its start reading plus its work. A heap
of those finishing readings makes each start and finish O(log k)."""

from __future__ import annotations

import heapq
from typing import Callable, Hashable

import simpy

from mmesim.sim.events import after


class SharedProcessor:
    __slots__ = ("env", "_heap", "_tags", "_virtual", "_last", "_gen", "_seq", "_speed", "busy_s", "_busy_since")

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._heap: list = []                  # (virtual finish, seq, callback, arg, tag)
        self._tags: dict[Hashable, int] = {}   # tag -> running jobs with it
        self._virtual = 0.0
        self._last = 0.0
        self._gen = 0
        self._seq = 0
        self._speed = 1.0                      # progress rate of each running job, until the next change
        self.busy_s = 0.0                      # time with at least one job running
        self._busy_since = 0.0

    # subclasses: how fast each job progresses, given what runs
    def _rate(self) -> float:
        raise NotImplementedError

    def _changed(self, tag, delta: int) -> None:
        """A job with ``tag`` started (+1) or finished (-1); the clock is already advanced."""

    def _elapsed(self, seconds: float) -> None:
        """``seconds`` passed with the current set of jobs running (before a change)."""

    @property
    def running(self) -> int:
        return len(self._heap)

    def _advance(self) -> None:
        now = self.env.now
        if self._heap:
            self._virtual += (now - self._last) * self._speed
            self._elapsed(now - self._last)
        self._last = now

    def run(self, work: float, tag: Hashable, callback: Callable, arg) -> None:
        """Start a job of ``work`` seconds (alone, at full speed); ``callback(arg)`` when done."""
        self._advance()
        if not self._heap:
            self._busy_since = self.env.now
        self._seq += 1
        heapq.heappush(self._heap, (self._virtual + work, self._seq, callback, arg, tag))
        self._tags[tag] = self._tags.get(tag, 0) + 1
        self._changed(tag, 1)
        self._schedule()

    def _schedule(self) -> None:
        """After the set of jobs changed: new speed, and the next finish."""
        self._gen += 1
        self._speed = self._rate()
        if self._heap:
            delay = (self._heap[0][0] - self._virtual) / self._speed
            after(self.env, delay if delay > 0 else 0.0, self._gen, self._finish)

    def _finish(self, ev) -> None:
        if ev.value != self._gen:   # the set of jobs changed since: a newer finish is scheduled
            return
        self._advance()
        _, _, callback, arg, tag = heapq.heappop(self._heap)
        left = self._tags[tag] - 1
        if left:
            self._tags[tag] = left
        else:
            del self._tags[tag]
        self._changed(tag, -1)
        if not self._heap:
            self.busy_s += self.env.now - self._busy_since
        self._schedule()
        callback(arg)

    def busy_until_now(self) -> float:
        return self.busy_s + (self.env.now - self._busy_since if self._heap else 0.0)
