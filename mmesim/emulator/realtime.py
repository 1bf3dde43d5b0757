"""The simulator's clock, run in real time on an asyncio loop, so the simulator's own
Triton model (mmesim.sim.triton.ModelServer, mmesim.sim.gpu.GPU) serves the virtual
backend unchanged.

Those classes only read ``env.now`` and schedule through ``mmesim.sim.events.after``,
which pushes (time, priority, id, event) onto ``env._queue``. This environment keeps that
heap, reads the loop's clock for ``now``, and keeps one loop timer armed for the heap's
earliest entry; whoever calls into the model from outside calls ``pump()`` afterwards."""

from __future__ import annotations

import asyncio
from heapq import heappop
from itertools import count


class RealtimeEnv:
    """``now`` is seconds since creation on the loop's monotonic clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_running_loop()
        self._t0 = self.loop.time()
        self._queue: list = []
        self._eid = count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    @property
    def _now(self) -> float:
        return self.loop.time() - self._t0

    now = _now

    def pump(self) -> None:
        """Arm the timer for the earliest scheduled event, if it is earlier than the one armed."""
        queue = self._queue
        if not queue:
            return
        first = queue[0][0]
        if first < self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_for = first
            self._timer = self.loop.call_at(self._t0 + first, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, float("inf")
        queue = self._queue
        while queue and queue[0][0] <= self._now:
            event = heappop(queue)[3]
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
        self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._queue.clear()
