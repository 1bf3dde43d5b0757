"""Inside a Python-backend execution: the model's own log of each one, read back.

Triton's trace (mmesim.triton.trace) says how long an execution took, not why. With
``$MMESIM_EXEC_LOG`` set to a folder in the server's environment (``ServerOptions.exec_log``),
the model mmesim generates (templates/python_model.py) writes one line per execution from its
stub: when it began, when the model's call returned and when it ended (CLOCK_MONOTONIC, Triton's
trace clock), the CPU its thread spent, the requests and items it served, and, from the kernel's
``/proc/thread-self/schedstat``, how long the thread was runnable but waiting for a core and how
many times it was put on one. So a long execution reads as slow work (CPU above the calibrated
time: a cold model, a slower core) or as a wait (the thread queued behind another on its core,
which processor sharing does not have), for executions that ran alone and for those that
overlapped another. ``call`` is the time until the model's call returned, ``after`` the rest:
on a GPU the call returns once its kernels are launched and the stub then waits for them, so
``call`` is the host's part (PyTorch dispatching and launching, the part translation moves with
the CPU) and ``after`` mostly the wait for the GPU, measured per batch (``by_items``); on a CPU
the call is the computation and ``after`` the handling of its outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmesim.errors import ConfigError
from mmesim.triton.args import EXEC_LOG_ENV
from mmesim.triton.trace import overlap, quantiles

FIELDS = ("start_ns", "launched_ns", "end_ns", "cpu_ns", "requests", "items", "wait_ns", "slices")


def read(folder: str | Path, window_ns: tuple[int, int] | None = None) -> dict:
    """Every logged execution in ``folder``, by start: ``{"model": [...], "start_ns", "end_ns":
    int arrays, "wall", "call", "after", "cpu", "wait": ms arrays (wait NaN where the kernel
    keeps no counters), "requests", "items", "slices", "overlap"}``; ``window_ns``: only those
    that began within it."""
    files = sorted(Path(folder).glob("*.log"))
    if not files:
        raise ConfigError(f"no execution log there: start the server with {EXEC_LOG_ENV} set to this folder "
                          "(ServerOptions.exec_log)", source=str(folder))
    models, rows = [], []
    for f in files:
        model = f.name.rsplit(".", 2)[0]
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                values = [int(v) for v in parts]
            except ValueError:
                values = []
            if len(values) != len(FIELDS):
                raise ConfigError(f"line {n} is not an execution ({len(FIELDS)} integers: {', '.join(FIELDS)}): "
                                  f"{line[:80]!r}", source=str(f))
            models.append(model)
            rows.append(values)
    a = np.array(rows, dtype=np.int64).reshape(-1, len(FIELDS))
    keep = np.ones(len(a), bool) if window_ns is None else (a[:, 0] >= window_ns[0]) & (a[:, 0] <= window_ns[1])
    order = np.argsort(a[:, 0], kind="stable")
    order = order[keep[order]]
    a = a[order]
    start, launched, end = a[:, 0], a[:, 1], a[:, 2]
    return {"model": [models[i] for i in order], "start_ns": start, "end_ns": end, "wall": (end - start) / 1e6,
            "call": (launched - start) / 1e6, "after": (end - launched) / 1e6, "cpu": a[:, 3] / 1e6,
            "requests": a[:, 4], "items": a[:, 5], "wait": np.where(a[:, 6] >= 0, a[:, 6] / 1e6, np.nan),
            "slices": a[:, 7], "overlap": overlap(start, end)}


LONG_WAIT_MS = 0.2     # an execution that waited longer than this for a core queued behind another thread


def breakdown(log: dict, qs=(50, 95, 99), long_wait_ms: float = LONG_WAIT_MS) -> dict:
    """Wall, CPU and wait for a core (ms) of all executions, of those that ran alone and of those
    that overlapped another; ``waited``: the share of each group that waited more than
    ``long_wait_ms`` for a core in one execution (it queued behind another thread)."""
    out = {}
    alone = log["overlap"] == 0
    for name, sel in (("all", np.ones(len(alone), bool)), ("alone", alone), ("overlapped", ~alone)):
        wait = log["wait"][sel]
        known = wait[~np.isnan(wait)]
        out[name] = {"n": int(sel.sum()), "wall": quantiles(log["wall"][sel], qs), "cpu": quantiles(log["cpu"][sel], qs),
                     "wait": quantiles(known, qs),
                     "waited": float(np.mean(known > long_wait_ms)) if len(known) else None}
    return out


def by_items(log: dict) -> dict[int, dict]:
    """Per batch (items in an execution), of the executions that ran alone: how many, and the
    medians (ms) of the wall clock, the time until the model's call returned (``call``), the
    rest (``after``) and the thread's CPU."""
    alone = log["overlap"] == 0
    out = {}
    for items in sorted(set(log["items"][alone].tolist())):
        sel = alone & (log["items"] == items)
        out[int(items)] = {"n": int(sel.sum()), **{f"{k}_ms": round(float(np.median(log[k][sel])), 4)
                                                   for k in ("wall", "call", "after", "cpu")}}
    return out


def describe(parts: dict) -> str:
    """``breakdown``'s figures in a few lines, ms."""
    lines = ["executions (the stubs' own log; ms)   n      wall p50/p95   CPU p50/p95   wait for a core p50/p95  "
             f"waited > {LONG_WAIT_MS:g} ms"]
    for name in ("alone", "overlapped"):
        g = parts[name]
        if not g["n"]:
            continue
        fmt = (lambda q: "-" if q["p50"] is None else f"{q['p50']:.2f} / {q['p95']:.2f}")
        waited = "-" if g["waited"] is None else f"{100 * g['waited']:.0f} %"
        lines.append(f"  {name:34s} {g['n']:6d}  {fmt(g['wall']):>13s}  {fmt(g['cpu']):>12s}  {fmt(g['wait']):>22s}  {waited:>14s}")
    return "\n".join(lines)
