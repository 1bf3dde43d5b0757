"""The simulator's clock, run in real time on an asyncio loop, so the simulator's own
models (mmesim.sim: Triton's queue and batcher, the GPU, the host's cores, disk, PCIe)
serve the virtual backend unchanged.

A ``simpy.Environment`` driven through SimPy's public API only: ``run(until=)`` brings its
clock to the loop's and runs what is due, ``peek()`` says when the next event is, and one
loop timer is kept armed for it. Whoever calls into the model from outside the loop's
timer calls ``catch_up()`` before (so ``now`` is the loop's time) and ``pump()`` after."""

from __future__ import annotations

import asyncio

import simpy


class RealtimeEnv(simpy.Environment):
    """``now`` is seconds since creation on the loop's monotonic clock (as of the last
    ``catch_up``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        super().__init__(0.0)
        self.loop = loop or asyncio.get_running_loop()
        self._loop_t0 = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = float("inf")

    def catch_up(self, at_least: float = 0.0) -> None:
        """Run every event due by the loop's time (or ``at_least``) and set the clock to it."""
        t = max(self.loop.time() - self._loop_t0, at_least)
        if t > self.now:
            self.run(until=t)

    def pump(self) -> None:
        """Arm the timer for the earliest scheduled event, if it is earlier than the one armed."""
        first = self.peek()
        if first < self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_for = first
            self._timer = self.loop.call_at(self._loop_t0 + first, self._fire)

    def _fire(self) -> None:
        due, self._timer, self._armed_for = self._armed_for, None, float("inf")
        # events at exactly ``due`` run too (run(until=t) stops before events at t)
        self.catch_up(at_least=due + 1e-9)
        self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
