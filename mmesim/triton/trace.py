"""Where a request's time goes inside Triton: its per-request trace, read back.

Triton can time-stamp every request it serves (``--trace-config level=TIMESTAMPS``): when
the HTTP frontend got it, when it entered the model's queue, when an execution took it,
when the execution ended, when the answer was sent. A load test sees only the client's
side; with the trace, measured latency splits into the parts the simulator models apart:

- ``pre``: HTTP receive to the model's queue (parsing, Triton's request object);
- ``queue``: waiting in the model's queue until an execution instance takes the request
  (queueing behind the same model's executions, and the scheduler thread's wake-up);
- ``compute``: the execution, inputs in to outputs out (on the Python backend: the hand-off
  to the stub, the stub's work, the hand-back): what the simulator's execution and hand-off are;
- ``post``: the execution's end to the last byte sent;
- ``server``: all of it, receive to send.

``overlap`` says, for each execution, which share of its time another execution ran:
executions that ran alone and those that shared the host can be compared (on CPU cores that
is what processor sharing predicts: two one-thread executions on two cores do not slow each
other).

The trace is Triton's JSON array of ``{"id", "timestamps": [{"name", "ns"}]}`` and
``{"id", "model_name"}`` entries (several per request, in any order)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmesim.errors import ConfigError

SEGMENTS = {
    "pre": ("HTTP_RECV_START", "QUEUE_START"),
    "queue": ("QUEUE_START", "COMPUTE_START"),
    "compute": ("COMPUTE_START", "COMPUTE_END"),
    "post": ("COMPUTE_END", "HTTP_SEND_END"),
    "server": ("HTTP_RECV_START", "HTTP_SEND_END"),
}
_NEEDED = {name for pair in SEGMENTS.values() for name in pair}


def server_args(path: str | Path, every: int = 1000) -> tuple[str, ...]:
    """tritonserver's arguments to time-stamp every request into ``path``: Triton writes each
    ``every`` requests' traces to ``path.0``, ``path.1``... as it goes, and the rest to
    ``path`` when it exits (so a running server's last few hundred are not there yet)."""
    return ("--trace-config", f"triton,file={path}", "--trace-config", f"triton,log-frequency={every}",
            "--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1", "--trace-config", "count=-1")


def trace_files(path: str | Path) -> list[Path]:
    """``path``'s numbered parts in order, then ``path`` itself: those that exist."""
    path = Path(path)
    parts = sorted((p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
                   key=lambda p: int(p.suffix[1:]))
    return parts + ([path] if path.exists() else [])


def _entries(path: Path) -> list:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read Triton's trace: {e.strerror}", source=str(path)) from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not a Triton trace (JSON: {e.msg}, line {e.lineno})", source=str(path)) from None
    if not isinstance(entries, list):
        raise ConfigError("not a Triton trace (a JSON array of trace entries expected)", source=str(path))
    return entries


def read(path: str | Path, window_ns: tuple[int, int] | None = None) -> dict:
    """The traced requests that completed, in the order they arrived, from ``path`` and its
    numbered parts: ``{"model": [...], "recv_ns": array, <segment>: array of ms for each of
    SEGMENTS, "overlap": array}``. ``window_ns``: only those received within it (Triton stamps
    CLOCK_MONOTONIC, the clock of ``time.monotonic_ns()`` on the same host)."""
    files = trace_files(path)
    if not files:
        raise ConfigError("no trace there (nor its numbered parts): start tritonserver with "
                          f"{' '.join(server_args(path))}", source=str(path))
    stamps: dict[int, dict[str, int]] = defaultdict(dict)
    model: dict[int, str] = {}
    for f in files:
        for e in _entries(f):
            if not isinstance(e, dict) or "id" not in e:
                continue
            if "model_name" in e:
                model[e["id"]] = e["model_name"]
            for t in e.get("timestamps", ()):
                stamps[e["id"]][t["name"]] = t["ns"]
    done = sorted((s for s in stamps.items() if _NEEDED <= s[1].keys()), key=lambda s: s[1]["HTTP_RECV_START"])
    if window_ns is not None:
        done = [s for s in done if window_ns[0] <= s[1]["HTTP_RECV_START"] <= window_ns[1]]
    out = {"model": [model.get(i, "") for i, _ in done],
           "recv_ns": np.array([s["HTTP_RECV_START"] for _, s in done], dtype=np.int64)}
    for name, (a, b) in SEGMENTS.items():
        out[name] = np.array([(s[b] - s[a]) / 1e6 for _, s in done])
    out["overlap"] = overlap(np.array([s["COMPUTE_START"] for _, s in done], dtype=np.int64),
                             np.array([s["COMPUTE_END"] for _, s in done], dtype=np.int64))
    return out


def open_share(starts, ends, lo, hi, at_least: int = 1) -> np.ndarray:
    """For each spell [lo, hi), the share of it during which at least ``at_least`` of the
    intervals [starts, ends) were open (0 for an empty spell).

    One sweep, O(n log n): the time with that many open is accumulated once at every start and
    end, the same timeline for every spell, and each spell reads the difference between its ends."""
    starts, ends = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if not len(starts):
        return np.zeros(len(lo))
    times = np.concatenate([starts, ends])
    order = np.argsort(times, kind="stable")
    t = times[order]
    open_after = np.cumsum(np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])[order])
    # time with enough open up to each event (equal times: the same reading)
    held = np.concatenate([[0.0], np.cumsum(np.diff(t) * (open_after[:-1] >= at_least))])
    span = hi - lo
    return np.where(span > 0, (np.interp(hi, t, held) - np.interp(lo, t, held)) / np.where(span > 0, span, 1), 0.0)


def overlap(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each interval [start, end), the share of it during which at least one other
    interval was open (0: it ran alone; 1: never alone): "another is open" is "two or more
    are open" over its own span."""
    starts, ends = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    share = np.zeros(len(starts))
    valid = ends > starts                     # an empty interval overlaps nothing
    if valid.any():
        lo, hi = starts[valid], ends[valid]
        share[valid] = open_share(lo, hi, lo, hi, at_least=2)
    return share


def quantiles(values_ms, qs=(50, 95, 99)) -> dict:
    """Count, mean and percentiles of ``values_ms`` (None without samples)."""
    v = np.asarray(values_ms, dtype=float)
    return {"n": int(len(v)), "mean": float(v.mean()) if len(v) else None,
            **{f"p{q}": float(np.percentile(v, q)) if len(v) else None for q in qs}}


def breakdown(trace: dict, qs=(50, 95, 99)) -> dict:
    """Each segment's quantiles, and the executions' apart by whether they ran alone."""
    out = {name: quantiles(trace[name], qs) for name in SEGMENTS}
    alone = trace["overlap"] == 0
    out["compute_alone"] = quantiles(trace["compute"][alone], qs)
    out["compute_shared"] = quantiles(trace["compute"][~alone], qs)
    return out
