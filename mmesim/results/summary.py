"""Summary: the numbers people compare, computed by ONE code path for a prediction and a
measurement alike.

- ``history(run)``: Locust's per-second ``_stats_history.csv`` rows, computed by
  ``mmesim.results.locust`` with Locust's own semantics (Requests/s averages the 10 whole
  seconds ending 2 s before the last request; Total Average Response Time is cumulative
  since the test began; failed requests count as requests and their response times too).
- ``reference_metrics(rows, steps)``: the reference's four numbers, exactly as its README
  (step 3) computes them from those rows, so a measured Locust CSV and a prediction give
  comparable figures.
- ``step_table(run)``: better-defined per-user-step figures (p50/p95/p99 over the requests
  started during that step only).

Which percentile is which: see ``mmesim.results.locust`` (Locust's bucketed rule in the
Locust-format rows; exact percentiles in the Summary's p50/p95/p99 and steps).
- ``summarize(run)``: all of it, plus failures by cause, cold starts, loads, cost.

Which source each figure came from (``Summary.sources``): a prediction's are the simulator's;
a measurement's are what observed them (``Run.sources``): a Locust run sees requests and
their times but not loads, unloads or cold starts, which the emulator's log (or CloudWatch)
does. A figure nothing observed is None (shown "n/a"), never 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from mmesim.results.locust import AGGREGATED, exact_percentile, history  # noqa: F401  (history: re-exported)
from mmesim.results.records import OUTCOMES, Run


SIMULATOR = "simulator"
# groups of figures a measurement may or may not observe -> the Summary's figures in each
OBSERVED = {
    "requests": ("latency_ms", "throughput_qps", "max_concurrent_users", "p50_ms", "p95_ms", "p99_ms", "requests",
                 "failures"),
    "cold_starts": ("cold_starts",),
    "loads": ("loads", "unloads"),
    "memory": ("peak_gpu_memory_bytes", "gpu_memory_utilization_peak"),
    "models": ("max_models_loaded",),
}


def sources_of(run: Run) -> dict[str, str]:
    """Figure -> the source that observed it (only those observed)."""
    if run.kind == "prediction":
        groups = dict.fromkeys(OBSERVED, SIMULATOR)
    else:
        groups = run.sources or {"requests": "request log"}
    return {f: groups[g] for g, figures in OBSERVED.items() if g in groups for f in figures}


def observed(summary: Summary, figures: dict[str, Any], source: str) -> Summary:
    """``summary`` with ``figures`` (a measurement's cold starts, loads...) as ``source`` saw
    them: what a load test cannot observe, from the emulator's log or CloudWatch."""
    figures = {k: v for k, v in figures.items() if v is not None}
    return summary.model_copy(update={**figures, "sources": {**summary.sources, **dict.fromkeys(figures, source)}})


def reference_metrics(rows: list[dict[str, Any]], steps: list[int], name: str | None = None) -> dict[str, Any]:
    """The reference's four metrics from history rows (its README, step 3):
    rows of the model's name (not Aggregated) whose User Count is one of ``steps``; per
    step the mean Requests/s, mean Total Average Response Time and the summed per-row
    increments of requests and failures; then over the steps without failures the minimum
    latency, the maximum throughput and the largest user count."""
    names = sorted({r["Name"] for r in rows if r["Name"] != AGGREGATED})
    if name is None:
        name = names[0] if len(names) == 1 else AGGREGATED
    mine = [r for r in rows if r["Name"] == name]
    per: dict[int, dict[str, list]] = defaultdict(lambda: {"rps": [], "rt": [], "req": 0, "fail": 0})
    prev_req = prev_fail = 0
    for r in mine:
        d_req, d_fail = r["Total Request Count"] - prev_req, r["Total Failure Count"] - prev_fail
        prev_req, prev_fail = r["Total Request Count"], r["Total Failure Count"]
        u = r["User Count"]
        if u in steps:
            s = per[u]
            s["rps"].append(r["Requests/s"])
            s["rt"].append(r["Total Average Response Time"])
            s["req"] += d_req
            s["fail"] += d_fail
    table = [{"users": u, "rps": float(np.mean(s["rps"])), "avg_ms": float(np.mean(s["rt"])),
              "requests": s["req"], "failures": s["fail"]} for u, s in sorted(per.items())]
    clean = [s for s in table if s["failures"] == 0]
    return {
        "name": name,
        "latency_ms": min((s["avg_ms"] for s in clean), default=None),
        "throughput_qps": max((s["rps"] for s in clean), default=None),
        "max_concurrent_users": max((s["users"] for s in clean), default=None),
        "steps": table,
    }


def step_table(run: Run) -> list[dict[str, Any]]:
    """Per user step: requests started while that many users ran, and their outcomes. No
    request starts with no user: Locust logs a count once its users have started, so the first
    users' first requests can precede it (by 20 ms, with the first executions of fresh copies
    among them); a request the log places at 0 users belongs to the count logged next."""
    a = run.records.arrays()
    if not run.users or not len(a["start"]):
        return []
    times = np.array([t for t, _ in run.users])
    counts = np.array([u for _, u in run.users])
    at = np.maximum(np.searchsorted(times, a["start"], side="right") - 1, 0)
    ahead = (counts[at] == 0) & (at + 1 < len(counts))
    at[ahead] += 1
    users_at_start = counts[at]
    steps = run.user_steps or sorted(set(counts.tolist()) - {0})
    rt = (a["end"] - a["start"]) * 1000.0
    ok = a["outcome"] == 0
    out = []
    for u in steps:
        m = users_at_start == u
        if not m.any():
            continue
        span = _time_at(run.users, u, run.duration_s)
        good = rt[m & ok]
        out.append({
            "users": int(u), "requests": int(m.sum()), "failures": int((m & ~ok).sum()),
            "rps": float(m.sum() / span) if span > 0 else 0.0,
            "avg_ms": float(rt[m].mean()),
            "p50_ms": exact_percentile(good, 50),
            "p95_ms": exact_percentile(good, 95),
            "p99_ms": exact_percentile(good, 99),
        })
    return out


def _time_at(users: list[tuple[float, int]], u: int, end: float | None = None) -> float:
    total = 0.0
    for (t0, n), (t1, _) in zip(users, users[1:] + [(end if end is not None else users[-1][0], 0)]):
        if n == u:
            total += t1 - t0
    return total


class Summary(BaseModel):
    """What `mmesim simulate --json` prints and summary.json holds.

    latency_ms, throughput_qps, max_concurrent_users: the reference's definitions (see
    ``reference_metrics``); p50/p95/p99: exact, over every successful request of the run; steps:
    per user step over the requests started in it; cost_per_million_usd: the endpoint's
    hourly price over a million requests served at throughput_qps (the best rate seen
    without failures)."""

    model_config = ConfigDict(extra="allow")
    kind: str
    instance_type: str
    instance_count: int
    duration_s: float
    max_models_loaded: int | None
    latency_ms: float | None
    throughput_qps: float | None
    max_concurrent_users: int | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int
    failures_by_cause: dict[str, int]
    cold_starts: int | None          # None: not observed (a Locust run cannot see them)
    loads: int | None
    unloads: int | None
    peak_gpu_memory_bytes: int | None
    gpu_memory_utilization_peak: float | None
    cost_per_hour_usd: float
    cost_per_million_usd: float | None
    reference_steps: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    warnings: list[str]
    sources: dict[str, str] = {}     # figure -> what observed it (simulator, locust, emulator log, cloudwatch)
    # inside the server (with a Triton trace, or a simulation asked for it): "queue_p50_ms"...
    server: dict[str, float | None] | None = None
    # a prediction on instance type local: how it took the host to place woken threads (packed_share,
    # moved_after_s, source: the profiles' calibration or the endpoint's); None: processor sharing
    host_wakeups: dict[str, Any] | None = None
    # the load generator's CPU per request sent, over all its processes: measured, Locust's own
    # process CPU (its background work included); predicted, what the generator model charged;
    # None: an ideal client, or nothing measured it. Where a prediction's client costs another
    # figure than the run's, its cores and latency are off by that much.
    client_cpu_ms_per_request: float | None = None


def summarize(run: Run, rows: list[dict[str, Any]] | None = None) -> Summary:
    """All the figures for one run. ``rows`` are the Locust history rows when they were
    measured by Locust itself; otherwise they are computed from the records."""
    rows = rows if rows is not None else history(run, percentiles=False)
    steps = run.user_steps or sorted({u for _, u in run.users} - {0})
    ref = reference_metrics(rows, steps)
    a = run.records.arrays()
    ok = a["outcome"] == 0
    rt_ok = (a["end"] - a["start"])[ok] * 1000.0
    causes = {OUTCOMES[i]: int(c) for i, c in enumerate(np.bincount(a["outcome"], minlength=len(OUTCOMES))) if c and i}
    peak = max((b for _, _, b in run.memory), default=None)
    hourly = run.mean_instances() * run.price_usd_per_hour
    tput = ref["throughput_qps"]
    warnings = []
    busy = run.generator_busy_s
    if busy and run.duration_s and max(busy) / run.duration_s > 0.5:
        warnings.append(f"load generator: the busiest worker was busy {100 * max(busy) / run.duration_s:.0f}% "
                        "of the run; its CPU limits throughput (add workers)")
    if run.translated:
        warnings.append(f"profiles translated to {run.gpu}: {', '.join(run.translated)}")
    if run.unweighted:
        warnings.append(f"mix weights leave out {', '.join(run.unweighted)}: never asked for (give 0 to say so)")
    if run.cpu_figures:
        warnings.append(f"profiles measured on CPU, used with their CPU figures on {run.gpu} "
                        f"(not a GPU estimate: calibrate on the GPU): {', '.join(run.cpu_figures)}")
    if run.other_processor:
        warnings.append("profiles calibrated on another processor than the host's, used with that processor's CPU "
                        "costs and how they grow after idle (recalibrate on the host): " + ", ".join(run.other_processor))
    sources = sources_of(run)
    client = client_cpu_ms(run, int(len(a["outcome"])))

    def known(figure: str, value):
        return value if figure in sources else None
    return Summary(
        kind=run.kind, instance_type=run.instance_type, instance_count=run.instance_count, duration_s=run.duration_s,
        max_models_loaded=run.max_models_loaded,
        latency_ms=ref["latency_ms"], throughput_qps=tput, max_concurrent_users=ref["max_concurrent_users"],
        p50_ms=exact_percentile(rt_ok, 50), p95_ms=exact_percentile(rt_ok, 95), p99_ms=exact_percentile(rt_ok, 99),
        requests=int(len(a["outcome"])), failures=int((~ok).sum()), failures_by_cause=causes,
        cold_starts=known("cold_starts", int(a["cold"].sum())),
        loads=known("loads", sum(1 for e in run.events if e.kind == "load")),
        unloads=known("unloads", sum(1 for e in run.events if e.kind == "unload")),
        peak_gpu_memory_bytes=peak,
        gpu_memory_utilization_peak=(peak / run.gpu_total_bytes) if peak and run.gpu_total_bytes else None,
        cost_per_hour_usd=hourly,
        cost_per_million_usd=(hourly / (tput * 3600) * 1e6) if tput else None,
        reference_steps=ref["steps"], steps=step_table(run), warnings=warnings,
        sources={**sources, **({"server": run.sources.get("server", SIMULATOR)} if run.server_ms else {}),
                 **({"client_cpu_ms_per_request": SIMULATOR if run.kind == "prediction" else "locust process"}
                    if client is not None else {})},
        server=server_figures(run.server_ms) if run.server_ms else None, host_wakeups=run.host_wakeups,
        client_cpu_ms_per_request=client,
    )


def client_cpu_ms(run: Run, requests: int) -> float | None:
    """The generator's CPU per request in ms: what a measurement's Locust processes spent, or
    what a prediction's generator model charged (None for an ideal client)."""
    if run.kind == "prediction":
        busy = sum(run.generator_busy_s)
        return 1e3 * busy / requests if busy > 0 and requests else None
    cpu = run.generator_cpu_s_per_request
    return None if cpu is None else 1e3 * cpu


SERVER_FIGURES = (("server", 50), ("server", 95), ("queue", 50), ("queue", 95), ("compute", 50), ("compute", 95),
                  ("compute", 99))


def server_figures(server_ms: dict) -> dict[str, float | None]:
    """Percentiles of the time requests spent inside the server, in their model's queue and
    executing (ms), predicted or measured alike: ``{"server_p50_ms": ..., "compute_p99_ms":
    ...}`` (where the ``server`` figures match and the latency misses, the miss is outside the
    server: the client, the host's network stack); with each
    execution's ``start``, also apart for executions that ran alone and those that overlapped
    another (on shared cores that is where processor sharing and a real scheduler differ)."""
    out = {f"{part}_p{q}_ms": exact_percentile(np.asarray(server_ms[part], dtype=float), q)
           for part, q in SERVER_FIGURES if part in server_ms}
    if "start" in server_ms:
        from mmesim.triton.trace import overlap
        start, compute = np.asarray(server_ms["start"], dtype=float), np.asarray(server_ms["compute"], dtype=float)
        shared = overlap(start, start + compute) > 0
        for name, sel in (("alone", ~shared), ("overlapped", shared)):
            for q in (50, 95):
                out[f"compute_{name}_p{q}_ms"] = exact_percentile(compute[sel], q)
        out["overlapped_share"] = float(shared.mean()) if len(shared) else None
    return out
