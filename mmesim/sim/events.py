"""The one scheduling primitive the model's hot path uses: ``after(env, delay, value,
callback)`` calls ``callback(event)`` in ``delay`` seconds, with ``event._value == value``.

It is SimPy's ``env.timeout(delay, value).callbacks.append(callback)`` without the
argument checks and the generic constructor: the simulator schedules four of these per
request, and they are a quarter of its cost. Delays here are never negative."""

from __future__ import annotations

from heapq import heappush

from simpy.events import NORMAL, Event


def after(env, delay: float, value, callback, _push=heappush, _new=Event.__new__, _Event=Event) -> Event:
    event = _new(_Event)
    event.env = env
    event.callbacks = [callback]
    event._value = value
    event._ok = True
    _push(env._queue, (env._now + delay, NORMAL, next(env._eid), event))
    return event
