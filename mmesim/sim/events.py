"""The one scheduling primitive the model's hot path uses: ``after(env, delay, value,
callback)`` calls ``callback(event)`` in ``delay`` seconds, with ``event.value == value``.

SimPy's public API only (a ``Timeout`` with one callback), so any SimPy environment runs
the model: ``simpy.Environment`` for predictions, the emulator's real-time one for the
virtual backend. Delays here are never negative."""

from __future__ import annotations

from simpy.events import Timeout


def after(env, delay: float, value, callback) -> Timeout:
    event = Timeout(env, delay, value)
    event.callbacks.append(callback)
    return event


def nothing(_arg) -> None:
    """The callback of work whose end nobody waits for (its time is counted elsewhere: the
    model threads' CPU beside an execution, a client process's work of each second)."""
