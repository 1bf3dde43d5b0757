"""Prediction vs measurement, second by second, from two Locust history row lists (validation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.report._figure import new_figure, number, require_keys, require_rows, save

HISTORY_KEYS = ("Timestamp", "User Count", "Name", "Requests/s", "Failures/s", "50%", "95%",
                "Total Average Response Time")


def _series(rows: Sequence[Mapping], name: str, what: str) -> dict[str, list[float]]:
    require_rows(rows, what)
    require_keys(rows, HISTORY_KEYS, what)
    picked = [(i, r) for i, r in enumerate(rows) if r["Name"] == name]
    if not picked:
        raise ConfigError(f"no rows named {name!r}", field=what)
    t0 = number(picked[0][1]["Timestamp"], what, "Timestamp", picked[0][0])
    out = {k: [number(r[k], what, k, i) for i, r in picked] for k in HISTORY_KEYS if k != "Name"}
    out["t"] = [t - t0 for t in out["Timestamp"]]
    return out


def plot_overlay(predicted: Sequence[Mapping], measured: Sequence[Mapping], path: str | Path, *,
                 name: str = "Aggregated", labels: tuple[str, str] = ("prediction", "measurement"),
                 title: str = "") -> Path:
    """Users, throughput (and failures) and response times (current p50/p95, cumulative average)
    over seconds since each run's first row; solid = prediction, dashed = measurement."""
    runs = [(_series(predicted, name, "predicted"), labels[0], "-"),
            (_series(measured, name, "measured"), labels[1], "--")]
    fig = new_figure(10, 8)
    users_ax, rps_ax, rt_ax = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2, 2]})
    for s, label, ls in runs:
        users_ax.plot(s["t"], s["User Count"], ls, color="#6c757d", label=label)
        rps_ax.plot(s["t"], s["Requests/s"], ls, color="#219ebc", label=f"Requests/s, {label}")
        rps_ax.plot(s["t"], s["Failures/s"], ls, color="#f94144", label=f"Failures/s, {label}")
        rt_ax.plot(s["t"], s["50%"], ls, color="#43aa8b", label=f"p50, {label}")
        rt_ax.plot(s["t"], s["95%"], ls, color="#ffb703", label=f"p95, {label}")
        rt_ax.plot(s["t"], s["Total Average Response Time"], ls, color="#8338ec", lw=1,
                   label=f"cumulative average, {label}")
    users_ax.set_ylabel("Users")
    rps_ax.set_ylabel("per second")
    rt_ax.set_ylabel("Response time (ms)")
    rt_ax.set_xlabel("Time since first row (s)")
    for ax in (users_ax, rps_ax, rt_ax):
        ax.legend(fontsize=7, frameon=False, loc="upper left", ncol=2)
    users_ax.set_title(title or f"{labels[0]} vs {labels[1]}: {name}")
    fig.tight_layout()
    return save(fig, path)
