"""The result of a calibration as rich tables, for the CLI."""

from __future__ import annotations

from rich.table import Table

from mmesim.calibrate.run import Calibration
from mmesim.units import MiB


def summary_table(c: Calibration) -> Table:
    p = c.profile
    t = Table(title=f"{p.name}  ({p.provenance.source})", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("resident memory per copy", f"{p.gpu_memory_bytes / MiB:,.1f} MiB  "
              f"(copies: {', '.join(f'{b / MiB:,.1f}' for b in c.per_copy_bytes)})")
    if c.process_overhead_bytes is not None:
        t.add_row("  of which process overhead", f"{c.process_overhead_bytes / MiB:,.1f} MiB (Python-backend stub, null model)")
    t.add_row("baseline (counted once)", f"{p.baseline_gpu_bytes / MiB:,.1f} MiB")
    if p.gpu != "cpu":
        t.add_row("host memory per copy", f"{p.host_memory_bytes / MiB:,.1f} MiB")
    t.add_row("artifact (model.tar.gz)", f"{p.artifact_bytes / MiB:,.1f} MiB")
    t.add_row("load / unload", f"{p.load_s:.2f} s / {p.unload_s:.2f} s")
    t.add_row("request body (batch 1)", f"{p.input_bytes:,} bytes (JSON)")
    t.add_row("server cost per request", f"{p.request_overhead_s * 1e3:.3f} ms + {p.decode_s_per_byte * 1e9:.2f} ns/byte "
              f"= {(p.request_overhead_s + p.decode_s_per_byte * p.input_bytes) * 1e3:.2f} ms at batch 1")
    if p.concurrency_scaling:
        t.add_row("copies executing at once", "  ".join(f"{s.concurrent}: x{s.throughput:.2f}"
                                                        for s in p.concurrency_scaling) + "  (total throughput)")
    else:
        t.add_row("overlap of two models", f"{p.gpu_overlap:.2f} (0 serialise, 1 perfect)")
    if p.cpu_threads:
        t.add_row("threads per execution", str(p.cpu_threads))
    t.add_row("machine load average", f"{c.load_average[0]:.1f} at the start, {c.load_average[1]:.1f} at the end")
    if c.max_models:
        t.add_row("max models loaded", f"{c.max_models.count} at threshold {c.max_models.threshold} "
                  f"({c.max_models.stopped_by})")
    return t


def service_table(c: Calibration) -> Table:
    t = Table(title="execution time by batch size (concurrency 1, binary tensors)")
    for col in ("batch", "profile ms", "cv", "Triton compute ms", "round trip ms", "request KiB"):
        t.add_column(col, justify="right")
    for s in c.service:
        t.add_row(str(s.batch), f"{s.mean_s * 1e3:.2f}", f"{s.cv:.2f}", f"{s.wall_s * 1e3:.2f}",
                  f"{sum(s.roundtrip_s) / len(s.roundtrip_s) * 1e3:.2f}", f"{s.body_bytes / 1024:,.0f}")
    return t


def load_table(c: Calibration) -> Table:
    t = Table(title="closed-loop load (client-side latency)")
    for col in ("batch", "concurrency", "p50 ms", "p95 ms", "requests/s", "samples/s", "batch executed"):
        t.add_column(col, justify="right")
    for p in c.load_points:
        t.add_row(str(p.batch), str(p.concurrency), f"{p.p50_s * 1e3:.1f}", f"{p.p95_s * 1e3:.1f}",
                  f"{p.throughput_rps:.1f}", f"{p.throughput_rps * p.batch:.1f}", f"{p.mean_exec_batch:.1f}")
    return t


def max_models_table(c: Calibration) -> Table | None:
    if not c.max_models:
        return None
    t = Table(title=f"max models loaded (stop when (used + used/models) / total >= {c.max_models.threshold})")
    for col in ("models", "used MiB", "total MiB", "used %", "load s"):
        t.add_column(col, justify="right")
    for s in c.max_models.trace:
        t.add_row(str(s.models), f"{s.used / MiB:,.0f}", f"{s.total / MiB:,.0f}", f"{100 * s.fraction:.1f}",
                  f"{s.load_s:.2f}")
    return t
