"""Frameworks side by side for one model: grouped bars of the blog's four metrics (chart 2).

Each metric is scaled to its largest value across frameworks, as the blog does, and labelled
with the real number, so metrics of different units share one axis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.report._figure import new_figure, require_rows, save

METRICS = (("max_models_loaded", "Max models loaded", ""), ("latency_ms", "Latency", " ms"),
           ("throughput_qps", "Throughput", " qps"), ("max_concurrent_users", "Max concurrent users", ""))
COLORS = {"pytorch": "#ee4c2c", "pt": "#ee4c2c", "tensorrt": "#75b900", "trt": "#75b900"}
_OTHER_COLORS = ("#219ebc", "#8338ec", "#fb8500", "#6c757d")


def _get(summary, key: str, label: str):
    value = summary.get(key) if isinstance(summary, Mapping) else getattr(summary, key, None)
    if value is not None and not isinstance(value, (int, float)):
        raise ConfigError(f"{label}: {key} is not a number", field="summaries", value=value)
    return value


def plot_frameworks(summaries: Mapping[str, object], path: str | Path, *, title: str = "") -> Path:
    """``summaries``: framework label -> Summary (or a dict) with latency_ms, throughput_qps,
    max_models_loaded and max_concurrent_users. A missing value (None) is drawn as 'n/a'."""
    require_rows(list(summaries or ()), "summaries")
    names = list(summaries)
    values = {n: [_get(summaries[n], key, n) for key, _, _ in METRICS] for n in names}
    if all(v is None for vs in values.values() for v in vs):
        raise ConfigError("nothing to plot: every metric is missing", field="summaries")

    fig = new_figure(12, 4)
    ax = fig.subplots()
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        heights, labels = [], []
        for m, (_, _, unit) in enumerate(METRICS):
            v = values[name][m]
            top = max((values[n][m] for n in names if values[n][m] is not None), default=0)
            heights.append(v / top if v is not None and top > 0 else 0.0)
            labels.append("n/a" if v is None else f"{v:.0f}{unit}")
        xs = [m - 0.4 + width * (j + 0.5) for m in range(len(METRICS))]
        color = COLORS.get(name.lower(), _OTHER_COLORS[j % len(_OTHER_COLORS)])
        bars = ax.bar(xs, heights, width * 0.95, color=color, label=name)
        ax.bar_label(bars, labels=labels, label_type="edge", fontsize=10, fontweight="bold", padding=2)
    ax.set_xticks(range(len(METRICS)), [label for _, label, _ in METRICS])
    ax.set_ylim(0, 1.2)
    ax.get_yaxis().set_ticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.legend(frameon=False, loc="upper right", ncol=len(names))
    ax.set_title(title or "Frameworks compared")
    fig.tight_layout()
    return save(fig, path)
