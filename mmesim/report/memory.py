"""GPU memory used over time per instance, and loaded model count over time (from events)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.report._figure import new_figure, save
from mmesim.results.cloudwatch import loaded_models
from mmesim.results.records import ModelEvent, Run

GIB = 1024 ** 3


def plot_memory(memory: Sequence[tuple[float, int, int]], events: Sequence[ModelEvent], path: str | Path, *,
                gpu_total_bytes: int = 0, duration_s: float | None = None, title: str = "") -> Path:
    """``memory``: (time s, instance, bytes used) samples; ``events``: ModelEvents. Memory is in
    GiB, with the total (and the 90 % line SageMaker-style loaders stop at) when it is known."""
    if not memory and not events:
        raise ConfigError("nothing to plot: no memory samples and no model events", field="memory")
    fig = new_figure(10, 6)
    mem_ax, count_ax = fig.subplots(2, 1, sharex=True)
    end = duration_s if duration_s is not None else max([t for t, _, _ in memory] +
                                                        [e.time + e.seconds for e in events], default=0.0)

    by_inst: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for t, inst, used in sorted(memory):
        by_inst[inst].append((t, used))
    for inst, st in sorted(by_inst.items()):
        ts, gib = [t for t, _ in st] + [end], [u / GIB for _, u in st]
        mem_ax.step(ts, gib + gib[-1:], where="post", label=f"instance {inst}")
    if gpu_total_bytes:
        mem_ax.axhline(gpu_total_bytes / GIB, color="black", lw=1, label="GPU total")
        mem_ax.axhline(0.9 * gpu_total_bytes / GIB, color="black", lw=1, ls="--", label="90 %")
    mem_ax.set_ylabel("GPU memory used (GiB)")
    if memory or gpu_total_bytes:
        mem_ax.legend(fontsize=8, frameon=False, loc="upper left")
    if not memory:
        mem_ax.text(0.5, 0.5, "no memory samples", ha="center", va="center", transform=mem_ax.transAxes)
    mem_ax.set_title(title or "GPU memory and loaded models")

    for inst, st in sorted(loaded_models(events).items()):
        ts, counts = [0.0] + [t for t, _ in st] + [max(end, st[-1][0])], [0] + [c for _, c in st]
        count_ax.step(ts, counts + counts[-1:], where="post", label=f"instance {inst}")
    if not events:
        count_ax.text(0.5, 0.5, "no model events", ha="center", va="center", transform=count_ax.transAxes)
    else:
        count_ax.legend(fontsize=8, frameon=False, loc="upper left")
    count_ax.set_ylabel("Models loaded")
    count_ax.set_xlabel("Time (s)")
    fig.tight_layout()
    return save(fig, path)


def plot_run_memory(run: Run, path: str | Path, *, title: str = "") -> Path:
    """plot_memory for a Run."""
    return plot_memory(run.memory, run.events, path, gpu_total_bytes=run.gpu_total_bytes,
                       duration_s=run.duration_s, title=title)
