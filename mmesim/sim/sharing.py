"""Processor sharing, the one engine behind every shared resource the simulator models: a
GPU, a CPU-only host's cores, and bandwidths (a disk, a network link, PCIe, the vCPUs that
untar and deserialise).

Every running job progresses at the same rate, which depends only on what runs: by default
``min(cap, total / demand)``, where ``demand`` adds up the running jobs' weights (a job's
``tag`` when it is an int, else 1). So a job alone moves at ``cap`` (its own limit: one
core, a stream's bandwidth), and together they never exceed ``total``. Subclasses may say
otherwise (``_rate``: a GPU's measured overlap).

Since every running job progresses at the same rate, one "virtual work" clock serves them
all: a job finishes when the clock reaches its start reading plus its work. A heap of those
finishing readings makes each start and finish O(log k); one timer is pending, for the job
that finishes first, and jobs finishing at the same moment finish together."""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Callable, Hashable

import simpy

from mmesim.sim.events import after


class SharedProcessor:
    __slots__ = ("env", "total", "cap", "demand", "done", "busy_s", "_heap", "_tags", "_virtual", "_last", "_timer",
                 "_seq", "_speed", "_busy_since", "_on_timer", "_finishing")

    def __init__(self, env: simpy.Environment, total: float = 1.0, cap: float = 1.0):
        self.env, self.total, self.cap = env, total, cap
        self.demand = 0.0                      # the running jobs' weights, added up
        self.done = 0.0                        # work done so far, all jobs together (core-seconds, bytes)
        self.busy_s = 0.0                      # time with at least one job running
        self._heap: list = []                  # (virtual finish, seq, callback, arg, tag)
        self._tags: dict[Hashable, int] = {}   # tag -> running jobs with it (tags that are not ints)
        self._virtual = 0.0
        self._last = 0.0
        self._timer = None                     # the one timer that counts: the next finish
        self._seq = 0
        self._speed = cap                      # progress rate of each running job, until the next change
        self._busy_since = 0.0
        self._on_timer = self._finish          # bound once: the hot path hands it to every timer
        self._finishing = False                # in _finish's callbacks: it schedules once they are done

    def _rate(self) -> float:
        """How fast each running job progresses now."""
        d = self.demand
        return self.cap if d <= 0 or d * self.cap <= self.total else self.total / d

    @property
    def running(self) -> int:
        return len(self._heap)

    def run(self, work: float, tag: Hashable, callback: Callable, arg) -> None:
        """Start a job of ``work`` (seconds alone at full speed, or bytes); ``callback(arg)``
        when done. ``tag``: an int is the job's weight in ``demand`` (cores it can use)."""
        heap = self._heap
        now = self.env.now
        if heap:                                    # the virtual clock moves on to now
            step = (now - self._last) * self._speed
            self._virtual += step
            self.done += step * self.demand
        else:
            self._busy_since = now
        self._last = now
        seq = self._seq = self._seq + 1
        heappush(heap, (self._virtual + work, seq, callback, arg, tag))
        if type(tag) is int:
            self.demand += tag
        else:
            tags = self._tags
            tags[tag] = tags.get(tag, 0) + 1
            self.demand += 1
        if self._finishing or len(heap) > 1 and heap[0][1] != seq and self._rate() == self._speed:
            return          # a finish schedules after its callbacks; or neither the first to finish nor
                            # the speed changed: its timer stands
        self._schedule()

    def _schedule(self) -> None:
        """After the set of jobs changed: new speed, and the next finish."""
        speed = self._speed = self._rate()
        heap = self._heap
        if heap:
            delay = (heap[0][0] - self._virtual) / speed
            self._timer = after(self.env, delay if delay > 0 else 0.0, None, self._on_timer)
        else:
            self._timer = None

    def _finish(self, ev) -> None:
        if ev is not self._timer:   # the set of jobs changed since: a newer finish is scheduled
            return
        now = self.env.now
        heap, tags = self._heap, self._tags
        step = (now - self._last) * self._speed     # the virtual clock moves on (a job runs)
        virtual = self._virtual = self._virtual + step
        self.done += step * self.demand
        self._last = now
        _, _, callback, arg, tag = heappop(heap)
        more = None
        while True:
            if type(tag) is int:
                self.demand -= tag
            else:
                left = tags[tag] - 1
                if left:
                    tags[tag] = left
                else:
                    del tags[tag]
                self.demand -= 1
            if not heap or heap[0][0] > virtual + 1e-12 * (1.0 + virtual):
                break
            if more is None:                 # others finish now too (within rounding)
                more = []
            _, _, cb, a, tag = heappop(heap)
            more.append((cb, a))
        if not heap:
            self.busy_s += now - self._busy_since
            self.demand = 0                  # no rounding left over
        # the callbacks often start the next job at once: one timer after them, rather than one
        # now that the new job's start would make stale (the same time: the clock stands still)
        self._finishing = True
        try:
            callback(arg)
            if more:
                for cb, a in more:
                    cb(a)
        finally:
            self._finishing = False
        self._schedule()

    def suspend(self, pick: Callable[[list], int]) -> tuple:
        """Take a running job off the processor: ``pick(running)`` chooses it by its index
        among the running jobs' ``(virtual finish, seq, callback, arg, tag)``. Returns ``(work
        left, tag, callback, arg)``, for ``run`` to go on with it later."""
        heap, now = self._heap, self.env.now
        step = (now - self._last) * self._speed          # the virtual clock moves on to now
        self._virtual += step
        self.done += step * self.demand
        self._last = now
        i = pick(heap)
        finish, _, callback, arg, tag = heap[i]
        heap[i] = heap[-1]
        heap.pop()
        heapify(heap)
        # its weight leaves demand, as in _finish (inline there: a call per finish costs the
        # engine 3-4 %, benchmarks/sharing_engine.py)
        if type(tag) is int:
            self.demand -= tag
        else:
            left = self._tags[tag] - 1
            if left:
                self._tags[tag] = left
            else:
                del self._tags[tag]
            self.demand -= 1
        if not heap:
            self.busy_s += now - self._busy_since
            self.demand = 0
        if not self._finishing:
            self._schedule()
        return max(0.0, finish - self._virtual), tag, callback, arg

    def busy_until_now(self) -> float:
        return self.busy_s + (self.env.now - self._busy_since if self._heap else 0.0)

    def done_until_now(self) -> float:
        """Work done so far, counting the jobs still running."""
        return self.done + (self.env.now - self._last) * self._speed * self.demand if self._heap else self.done


class SharedRate(SharedProcessor):
    """A bandwidth shared by the transfers in progress: with n of them each moves at
    min(``per_transfer``, ``total`` / n) bytes a second (the host's vCPUs too, whose "bytes"
    are CPU-seconds and whose per-transfer cap is one core)."""

    __slots__ = ()

    def __init__(self, env, total: float, per_transfer: float = float("inf")):
        super().__init__(env, total, per_transfer)

    @property
    def per_transfer(self) -> float:
        return self.cap

    @property
    def moved(self) -> float:
        return self.done_until_now()

    def rate(self) -> float:
        """Bytes a second each transfer in progress moves now."""
        return self._rate() if self._heap else 0.0

    def start(self, nbytes: float, value, callback) -> None:
        """Move ``nbytes``; then ``callback(value, seconds it took)``."""
        self.run(nbytes, 1, self._moved, (value, callback, self.env.now))

    def _moved(self, arg) -> None:
        value, callback, started = arg
        callback(value, self.env.now - started)
