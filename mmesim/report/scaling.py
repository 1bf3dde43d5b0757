"""Autoscaling: instances billed and in service over time, over each minute's failed
requests and p95 (the SLO misses while the endpoint scales out)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mmesim.report._figure import FAIL_BARS, LATENCY, OK_BARS, RPS, new_figure, save


def per_minute(run) -> list[dict]:
    """Requests started in each minute: offered rate, failures, p95 of the successful ones."""
    a = run.records.arrays()
    minute = (a["start"] // 60).astype(int)
    ok = a["outcome"] == 0
    rt = (a["end"] - a["start"]) * 1000
    rows = []
    for m in range(int(math.ceil(run.duration_s / 60))):
        sel = minute == m
        good = rt[sel & ok]
        rows.append({"minute": m, "offered_rps": float(sel.sum() / 60), "failed": int((sel & ~ok).sum()),
                     "p95_ms": float(np.percentile(good, 95)) if len(good) else float("nan")})
    return rows


def figure(timeline: list[tuple[float, int, int]], minutes: list[dict], duration_s: float, title: str):
    fig = new_figure(10, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    ts = [t / 60 for t, _, _ in timeline] + [duration_s / 60]
    top.step(ts, [b for _, b, _ in timeline] + [timeline[-1][1]], where="post", color=LATENCY, label="billed")
    top.step(ts, [s for _, _, s in timeline] + [timeline[-1][2]], where="post", color=RPS, lw=2, label="in service")
    top.set_ylabel("instances")
    top.legend(fontsize=8, frameon=False, loc="upper left")
    top.set_title(title)
    right = top.twinx()
    right.plot([m["minute"] + 0.5 for m in minutes], [m["offered_rps"] for m in minutes], color="grey", lw=1,
               ls=":")
    right.set_ylabel("offered req/s (dotted)")
    x = [m["minute"] + 0.5 for m in minutes]
    bottom.bar(x, [m["failed"] for m in minutes], color=FAIL_BARS, width=0.8, label="failed requests")
    bottom.set_ylabel("failed per minute")
    r2 = bottom.twinx()
    r2.plot(x, [m["p95_ms"] for m in minutes], color=OK_BARS, marker=".")
    r2.set_ylabel("p95 ms (green)")
    bottom.set_xlabel("minutes")
    bottom.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def plot_scaling(run, path: str | Path, *, title: str = "") -> Path:
    return save(figure(run.instance_timeline, per_minute(run), run.duration_s,
                       title or "Autoscaling: instances over time"), path)
