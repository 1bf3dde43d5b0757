"""Per user step: throughput and latency lines over success/failure bars (the blog's chart 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mmesim.report._figure import (FAIL_BARS, LATENCY, OK_BARS, RPS, new_figure, number, require_keys,
                                   require_rows, save)

STEP_KEYS = ("users", "requests", "failures", "rps", "avg_ms", "p50_ms", "p95_ms", "p99_ms")


def plot_steps(steps: Sequence[Mapping], path: str | Path, *, title: str = "") -> Path:
    """``steps``: one dict per user step with STEP_KEYS (summary's step table). Throughput is on
    the left axis, average and p95 latency on the right, request counts in the bars below."""
    require_rows(steps, "steps")
    require_keys(steps, STEP_KEYS, "steps")
    col = {k: [number(s[k], "steps", k, i) for i, s in enumerate(steps)] for k in STEP_KEYS}
    x = range(len(steps))
    labels = [f"{u:g}" for u in col["users"]]

    fig = new_figure(10, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(x, col["rps"], "s-", color=RPS, label="Requests/s")
    top.set_ylabel("Requests/s")
    right = top.twinx()
    right.plot(x, col["avg_ms"], "s-", color=LATENCY, label="Average response time")
    right.plot(x, col["p95_ms"], "^--", color=LATENCY, alpha=0.7, label="p95 response time")
    right.set_ylabel("Response time (ms)")
    for xi, rps, avg in zip(x, col["rps"], col["avg_ms"]):
        top.annotate(f"{rps:.1f}", (xi, rps), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        right.annotate(f"{avg:.0f}", (xi, avg), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8)
    lines = top.get_lines()[:1] + right.get_lines()[:2]
    top.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8, frameon=False)
    top.set_title(title or "Throughput and latency per user step")

    ok = [r - f for r, f in zip(col["requests"], col["failures"])]
    bottom.bar(x, ok, color=OK_BARS, label="Successful requests")
    bottom.bar(x, col["failures"], bottom=ok, color=FAIL_BARS, label="Failed requests")
    bottom.set_ylabel("# requests")
    bottom.set_xlabel("Users")
    bottom.set_xticks(list(x), labels)
    bottom.legend(loc="upper left", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return save(fig, path)
