"""Locust's user dispatch: how many users run at each moment of a staged load test.

One rule for the simulator (sim/client.py) and the real load test (loadtest/shape.py), read
from Locust 2.x (``locust/runners.py``, ``locust/dispatch.py``):

- The shape is polled once a second (``Runner.shape_worker``): at tick k the stage in force
  is the first whose ``end_s`` lies after k (``stage_at``); after the last stage the test stops.
  When the (users, spawn_rate) a tick returns differs from the previous tick's, a new
  dispatch begins at that tick from the users running then.
- A dispatch moves the count toward its target in batches (``UsersDispatcher.new_dispatch``):
  ``batch = max(1, floor(spawn_rate))`` users at once, one batch every
  ``batch / spawn_rate`` seconds, the first batch at once, the last one cut to the target.
  So 10 users at 5/s start as 5 at t=0 and 5 at t=1, not one every 0.2 s; 0.5/s starts one
  user every 2 s.
- In one process (``LocalRunner``) a new dispatch cancels the one still ramping and ticks
  stay on the 1 s grid. The master of a distributed run (``MasterRunner.start``) blocks until
  its ramp is done, so the next tick comes ``max(1 s, ramp duration)`` after the last one and
  a stage whose ramp outlasts it delays the next stage.
- Users are stopped last-started first and assigned to worker processes round-robin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mmesim.workload import Stage

TICK_S = 1.0          # Runner.shape_worker polls the shape once a second


def stage_at(stages: Sequence[Stage], t: float) -> Stage | None:
    """The stage a LoadTestShape returns at ``t`` seconds: the first ending after t; None
    once the last has ended (Locust then stops the test)."""
    for stage in stages:
        if t < stage.end_s:
            return stage
    return None


def batches(start: int, target: int, spawn_rate: float) -> list[tuple[float, int]]:
    """One dispatch: (seconds after it began, user count) after each batch."""
    step = max(1, math.floor(spawn_rate))
    gap = step / spawn_rate
    out, count, i = [], start, 0
    while count != target:
        count = min(count + step, target) if count < target else max(count - step, target)
        out.append((i * gap, count))
        i += 1
    return out


def user_timeline(stages: Sequence[Stage], distributed: bool = False) -> list[tuple[float, int]]:
    """The user count as a step function [(time, users), ...] from (0, 0), up to the end of
    the last stage (the moment Locust stops the test; users are not counted down to 0)."""
    timeline: list[tuple[float, int]] = [(0.0, 0)]
    if not stages:
        return timeline
    end = stages[-1].end_s
    count, last, tick = 0, None, 0.0
    pending: list[tuple[float, int]] = []           # the ramp in progress (absolute times)
    while True:
        stage = stage_at(stages, tick)
        # the ramp in progress runs until this tick (it is cancelled, or blocks, here)
        while pending and pending[0][0] < tick:
            _append(timeline, *pending.pop(0))
            count = timeline[-1][1]
        if stage is None:
            break
        nxt = tick + TICK_S
        if (stage.users, stage.spawn_rate) != last:
            last = (stage.users, stage.spawn_rate)
            if distributed:                              # blocks: the whole ramp, then the next tick
                ramp = [(tick + dt, n) for dt, n in batches(count, stage.users, stage.spawn_rate)]
                for when, n in ramp:
                    _append(timeline, when, n)
                count = stage.users
                nxt = tick + max(TICK_S, ramp[-1][0] - tick if ramp else 0.0)
                pending = []
            else:                                        # cancels the ramp in progress
                pending = [(tick + dt, n) for dt, n in batches(count, stage.users, stage.spawn_rate)]
                while pending and pending[0][0] <= tick:
                    _append(timeline, *pending.pop(0))
                    count = timeline[-1][1]
        tick = nxt
        if tick > end + TICK_S:
            break
    return [(t, n) for t, n in timeline if t < end or (t, n) == (0.0, 0)]


def _append(timeline: list[tuple[float, int]], t: float, n: int) -> None:
    if timeline and timeline[-1][0] == t:
        timeline[-1] = (t, n)
    elif not timeline or timeline[-1][1] != n:
        timeline.append((t, n))


def users_at(timeline: Sequence[tuple[float, int]], t: float) -> int:
    """The count in force at ``t`` on a timeline from ``user_timeline``."""
    n = 0
    for when, users in timeline:
        if when > t:
            break
        n = users
    return n
