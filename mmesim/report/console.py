"""Terminal output with rich: the summary table, catalogue listings, a progress bar."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mmesim.units import MiB

# Piped or captured output gets a wide table rather than names cut short with an ellipsis.
console = Console(width=None if sys.stdout.isatty() else 160)


@contextmanager
def progress_bar(label: str, quiet: bool = False, after_s: float = 1.0):
    """Yields ``update(done, total, info="")`` for one bar labelled ``label``."""
    with phases(quiet, after_s) as update:
        yield lambda done, total, info="": update(label, done, total, info)


@contextmanager
def phases(quiet: bool = False, after_s: float = 1.0):
    """Yields ``update(phase, done, total, info="")``: a bar per phase with its time left and a
    line of live figures. Bars appear only once the work has taken ``after_s`` seconds, so
    quick runs print nothing extra. Written to stderr; nothing at all when ``quiet``."""
    started = time.monotonic()
    state: dict = {"tasks": {}}
    err = Console(stderr=True)

    def update(phase: str, done: float, total: float, info: str = "") -> None:
        if quiet or ("bar" not in state and time.monotonic() - started < after_s):
            return
        if "bar" not in state:
            bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                           TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err, transient=True)
            bar.start()
            state["bar"] = bar
        tasks = state["tasks"]
        if phase not in tasks:
            tasks[phase] = state["bar"].add_task(phase, total=total, info=info)
        state["bar"].update(tasks[phase], completed=done, total=total, info=info)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"].stop()


@contextmanager
def status_line(quiet: bool = False):
    """Yields ``say(message)`` for waits nobody can time (an endpoint being created): each
    message logged to stderr, the latest kept beside a spinner and the time elapsed."""
    err = Console(stderr=True, quiet=quiet)
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                   transient=True)
    task = bar.add_task("starting")
    bar.start()

    def say(message: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)
        bar.update(task, description=message)

    try:
        yield say
    finally:
        bar.stop()


def live_figures(stats) -> str:
    """Locust's live numbers as one short line (a LiveStats, or None before its first row)."""
    if stats is None:
        return "starting Locust"
    return f"{stats.users} users  {stats.rps:,.1f} req/s  {stats.requests:,} requests  {stats.failures:,} failed"


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def placement_text(w: dict) -> str:
    """A host's placement of woken threads (a WakePlacement's fields) in words."""
    text = (f"{100 * w['packed_share']:.0f} % of threads woken beside a running one take its core, "
            f"for up to {1e3 * w['moved_after_s']:.2f} ms")
    if w.get("full_share") is not None:
        text += (f"; with every core busy {100 * w['full_share']:.0f} % run at once in place of a running one, "
                 f"for up to {1e3 * w['slice_s']:.2f} ms")
        if w.get("late_wait_s"):
            text += f", the others after {1e3 * w['late_wait_s']:.2f} ms"
    return text


def placement_note(w: dict) -> str:
    """What a prediction on local took for the host's placement of woken threads (a Summary's
    ``host_wakeups``)."""
    return (f"host placement: {placement_text(w)} ({w.get('source') or 'source unsaid'}; --host-wakeups fair "
            "for processor sharing)")


def client_pace_note(gen) -> str:
    """A load generator measured by pace (``mmesim.loadtest.probe.measure_client``), in a line."""
    return (", ".join(f"{1e3 * x.cpu_s_per_request:.2f} ms a request after {1e3 * x.idle_s:.1f} ms idle"
                      + ("" if x.timed_share is None else f" ({100 * x.timed_share:.0f} % timed)")
                      for x in gen.by_idle)
            + f"; {1e3 * gen.background_cpu_s_per_s:.1f} ms of CPU a second besides; timer slack "
              f"{1e3 * gen.wait_slack_s:.2f} ms")


def print_summary(summary, run=None) -> None:
    s = summary
    t = Table(title=f"{s.kind}: {s.instance_count} x {s.instance_type}", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("max models loaded", str(s.max_models_loaded))
    if run is not None and run.copies:
        t.add_row("copies targeted", ", ".join(map(str, run.copies)))
    t.add_row("latency (reference definition)", _fmt(s.latency_ms, " ms"))
    t.add_row("throughput (reference definition)", _fmt(s.throughput_qps, " req/s"))
    t.add_row("max concurrent users", str(s.max_concurrent_users))
    t.add_row("p50 / p95 / p99 (ok requests)", f"{_fmt(s.p50_ms)} / {_fmt(s.p95_ms)} / {_fmt(s.p99_ms)} ms")
    t.add_row("requests / failures", f"{s.requests:,} / {s.failures:,}")
    for cause, n in s.failures_by_cause.items():
        t.add_row(f"  {cause}", f"{n:,}")
    t.add_row("cold starts / loads / unloads",      # None: not observed (a Locust run cannot see them)
              " / ".join("n/a" if v is None else str(v) for v in (s.cold_starts, s.loads, s.unloads)))
    if s.gpu_memory_utilization_peak is not None:
        t.add_row("peak GPU memory", f"{s.peak_gpu_memory_bytes / MiB:,.0f} MiB ({100 * s.gpu_memory_utilization_peak:.1f}%)")
    if run is not None and run.instance_timeline:
        serving = [n for _, _, n in run.instance_timeline]
        t.add_row("instances in service (autoscaling)", f"{serving[0]} -> {max(serving)} -> {serving[-1]}, "
                                                        f"{run.mean_instances():.2f} billed on average")
    if s.kind != "prediction":          # what observed each group of figures; "n/a": nothing did
        from mmesim.results.summary import OBSERVED
        t.add_row("measured by", "; ".join(f"{group} {s.sources.get(figures[0], 'n/a')}"
                                           for group, figures in OBSERVED.items()))
    t.add_row("cost per hour", _fmt(s.cost_per_hour_usd, " USD", 3))
    t.add_row("cost per million inferences", _fmt(s.cost_per_million_usd, " USD", 2))
    console.print(t)
    if s.steps:
        st = Table(title="per user step (requests started at that step; avg ms over all of them, as Locust's, "
                         "p50-p99 over those that succeeded)")
        for col in ("users", "requests", "failures", "req/s", "avg ms", "p50 ms", "p95 ms", "p99 ms"):
            st.add_column(col, justify="right")
        for r in s.steps:
            st.add_row(str(r["users"]), f"{r['requests']:,}", f"{r['failures']:,}", _fmt(r["rps"]), _fmt(r["avg_ms"]),
                       _fmt(r["p50_ms"]), _fmt(r["p95_ms"]), _fmt(r["p99_ms"]))
        console.print(st)
    if s.host_wakeups:
        console.print(placement_note(s.host_wakeups))
    for w in s.warnings:
        console.print(f"[yellow]note:[/yellow] {w}")


def print_profiles(profiles) -> None:
    t = Table(title="built-in profiles")
    for col in ("name", "framework", "gpu", "MiB/copy", "batch-1 ms", "max batch", "how made"):
        t.add_column(col)
    for p in profiles:
        t.add_row(p.name, p.framework, p.gpu, f"{p.gpu_memory_bytes / MiB:,.0f}", f"{p.service[0].seconds * 1e3:.2f}",
                  str(p.triton.max_batch_size), p.provenance.method)
    console.print(t)


def print_instances(catalog) -> None:
    t = Table(title="instance types")
    for col in ("instance", "GPU", "GPUs", "GPU MiB (NVML)", "vCPUs", "RAM GiB", "Gbit/s", "USD/h", "price", "MME"):
        t.add_column(col)
    for it in catalog.listed():
        g = catalog.gpu_of(it)
        t.add_row(it.name, g.name, str(it.gpus), f"{g.nvml_total_mib:,}", str(it.vcpus), f"{it.memory_gib:g}",
                  f"{it.network_gbps:g}", f"{it.price_usd_per_hour:.4g}",
                  f"{it.price_date}{'' if it.price_verified else ' (unverified)'}",
                  "yes" if catalog.mme_eligible(it) else "no")
    console.print(t)
    console.print(f"prices: {catalog.price_source}")
    if catalog.mme_support:
        console.print(f"MME: {catalog.mme_support.source}, checked {catalog.mme_support.checked}")


