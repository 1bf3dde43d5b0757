"""One GPU shared by every model on an instance: processor sharing with partial overlap.

An execution that would take ``work`` seconds alone progresses at rate
``(1 + overlap * (k - 1)) / k`` while k executions run together: overlap 0 means kernels
of different executions take turns (the GPU's total throughput stays 1), overlap 1 means
they run side by side without slowing each other. The overlap comes from the profiles
(calibrate measures it); with several models the smallest overlap among the running ones
applies, because the most contended model sets the pace."""

from __future__ import annotations

from typing import Callable

import simpy


class GPU:
    __slots__ = ("env", "_jobs", "_last", "_gen", "busy_s", "_busy_since")

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._jobs: dict[int, list] = {}   # id -> [remaining work, overlap, callback, arg]
        self._last = 0.0
        self._gen = 0
        self.busy_s = 0.0
        self._busy_since = 0.0

    def _rate(self) -> float:
        k = len(self._jobs)
        if k <= 1:
            return 1.0
        overlap = min(j[1] for j in self._jobs.values())
        return (1.0 + overlap * (k - 1)) / k

    def _advance(self) -> None:
        now = self.env.now
        if self._jobs and now > self._last:
            done = (now - self._last) * self._rate()
            for job in self._jobs.values():
                job[0] -= done
        self._last = now

    def run(self, work: float, overlap: float, callback: Callable, arg) -> None:
        """Start an execution of ``work`` solo-seconds; ``callback(arg)`` when it finishes."""
        self._advance()
        if not self._jobs:
            self._busy_since = self.env.now
        self._gen += 1
        self._jobs[self._gen] = [work, overlap, callback, arg]
        self._schedule()

    def _schedule(self) -> None:
        if not self._jobs:
            return
        rate = self._rate()
        key, job = min(self._jobs.items(), key=lambda kv: kv[1][0])
        ev = self.env.timeout(max(job[0], 0.0) / rate, value=(key, len(self._jobs), self._gen))
        ev.callbacks.append(self._finish)

    def _finish(self, ev) -> None:
        key, _k, gen = ev.value
        if gen != self._gen:   # the set of jobs changed since: a newer completion is scheduled
            return
        self._advance()
        job = self._jobs.pop(key)
        if not self._jobs:
            self.busy_s += self.env.now - self._busy_since
        self._gen += 1
        self._schedule()
        job[2](job[3])

    def busy_until_now(self) -> float:
        return self.busy_s + (self.env.now - self._busy_since if self._jobs else 0.0)
