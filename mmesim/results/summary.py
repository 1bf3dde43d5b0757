"""Summary: the numbers people compare, computed by ONE code path for a prediction and a
measurement alike.

- ``history(run)``: Locust's per-second ``_stats_history.csv`` rows, with Locust's own
  semantics (Requests/s averages the 10 whole seconds ending 2 s before the last request;
  Total Average Response Time is cumulative since the test began; failed requests count as
  requests and their response times count too).
- ``reference_metrics(rows, steps)``: the reference's four numbers, exactly as its README
  (step 3) computes them from those rows, so a measured Locust CSV and a prediction give
  comparable figures.
- ``step_table(run)``: better-defined per-user-step figures (p50/p95/p99 over the requests
  started during that step only).
- ``summarize(run)``: all of it, plus failures by cause, cold starts, loads, cost.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from mmesim.results.locust_csv import DEFAULT_REQUEST_TYPE, bucket_response_time
from mmesim.results.records import OUTCOMES, Run

AGGREGATED = "Aggregated"


def bucketed(values_ms) -> np.ndarray:
    """Response times as Locust keeps them: rounded to ~2 significant digits."""
    return np.array([bucket_response_time(v) for v in np.asarray(values_ms, dtype=float).tolist()], dtype=float)


def locust_percentile(buckets: np.ndarray, q: float, presorted: bool = False) -> float:
    """Locust's percentile rule (``response_time_percentile``) on bucketed times: walking
    from the slowest down until at most int(n*q) remain below is the element at index int(n*q)."""
    n = len(buckets)
    if n == 0:
        return 0.0
    k = min(int(n * q), n - 1)
    return float(buckets[k] if presorted else np.partition(buckets, k)[k])


PERCENTILE_COLUMNS = ((0.5, "50%"), (0.66, "66%"), (0.75, "75%"), (0.8, "80%"), (0.9, "90%"), (0.95, "95%"),
                      (0.98, "98%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%"), (1.0, "100%"))


def history(run: Run, percentiles: bool = True, request_type: str = DEFAULT_REQUEST_TYPE) -> list[dict[str, Any]]:
    """Locust ``--csv-full-history`` rows: for every second, one row per request name and
    one "Aggregated" row, keyed by Locust 2.x column names. Without ``percentiles`` the
    percentile and median columns are left out (cheaper: capacity fits call this often)."""
    a = run.records.arrays()
    names = [run.request_name.get(m, m) for m in run.records.models]
    order = np.argsort(a["end"], kind="stable")
    end = a["end"][order]
    rt = ((a["end"] - a["start"]) * 1000.0)[order]
    brt = bucketed(rt) if percentiles else rt
    failed = (a["outcome"] != 0)[order]
    uniq = sorted(set(names))
    index_of = np.array([uniq.index(n) for n in names], dtype=np.int32)
    name_idx = index_of[a["model"][order]] if len(end) else np.zeros(0, dtype=np.int32)
    seconds = int(math.floor(run.duration_s))
    T = np.arange(seconds + 1)
    done = np.searchsorted(end, T, side="right")             # requests logged by each row's time
    last_sec = (np.where(done > 0, np.floor(end[np.maximum(done - 1, 0)]).astype(int), -1) if len(end)
                else np.full(len(T), -1))                    # a measured run may have no finished request
    lo, hi = np.maximum(last_sec - 12, 0), last_sec - 2
    width = np.maximum(hi - lo, 1)
    users_t = np.array([t for t, _ in run.users] or [0.0])
    users_n = np.array([u for _, u in run.users] or [0])
    users = users_n[np.maximum(np.searchsorted(users_t, T, side="right") - 1, 0)]
    sec_of = np.floor(end).astype(int)
    groups = [(n, name_idx == i) for i, n in enumerate(uniq)] + [(AGGREGATED, np.ones(len(end), dtype=bool))]
    per_group = []
    for g, mask in groups:
        per_sec = np.bincount(sec_of[mask], minlength=seconds + 14)
        fail_sec = np.bincount(sec_of[mask & failed], minlength=seconds + 14)
        cps, cfs = np.concatenate([[0], np.cumsum(per_sec)]), np.concatenate([[0], np.cumsum(fail_sec)])
        rps = np.where(hi > lo, (cps[np.maximum(hi, 0)] - cps[lo]) / width, 0.0)
        fps = np.where(hi > lo, (cfs[np.maximum(hi, 0)] - cfs[lo]) / width, 0.0)
        cnt = np.concatenate([[0], np.cumsum(mask)])[done]
        fcnt = np.concatenate([[0], np.cumsum(mask & failed)])[done]
        rsum = np.concatenate([[0.0], np.cumsum(np.where(mask, rt, 0.0))])[done]
        rmin = np.concatenate([[np.inf], np.minimum.accumulate(np.where(mask, rt, np.inf))])[done]
        rmax = np.concatenate([[0.0], np.maximum.accumulate(np.where(mask, rt, 0.0))])[done]
        per_group.append((g, mask, rps, fps, cnt, fcnt, rsum, rmin, rmax))
    rows: list[dict[str, Any]] = []
    for i, t in enumerate(T.tolist()):
        for g, mask, rps, fps, cnt, fcnt, rsum, rmin, rmax in per_group:
            n = int(cnt[i])
            row = {"Timestamp": t, "User Count": int(users[i]), "Type": "" if g == AGGREGATED else request_type,
                   "Name": g, "Requests/s": float(rps[i]), "Failures/s": float(fps[i])}
            if percentiles:
                d = int(done[i])
                m = mask[:d]
                recent = np.sort(brt[:d][m & (end[:d] > t - 10)])
                for q, col in PERCENTILE_COLUMNS:
                    row[col] = locust_percentile(recent, q, presorted=True) if len(recent) else None
            row.update({"Total Request Count": n, "Total Failure Count": int(fcnt[i])})
            if percentiles:
                row["Total Median Response Time"] = locust_percentile(brt[:d][m], 0.5) if n else 0
            row.update({"Total Average Response Time": float(rsum[i] / n) if n else 0.0,
                        "Total Min Response Time": float(rmin[i]) if n else 0,
                        "Total Max Response Time": float(rmax[i]) if n else 0,
                        "Total Average Content Size": 0})
            rows.append(row)
    return rows


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
    """Per user step: requests started while that many users ran, and their outcomes."""
    a = run.records.arrays()
    if not run.users or not len(a["start"]):
        return []
    times = np.array([t for t, _ in run.users])
    counts = np.array([u for _, u in run.users])
    users_at_start = counts[np.maximum(np.searchsorted(times, a["start"], side="right") - 1, 0)]
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
            "p50_ms": float(np.percentile(good, 50)) if len(good) else None,
            "p95_ms": float(np.percentile(good, 95)) if len(good) else None,
            "p99_ms": float(np.percentile(good, 99)) if len(good) else None,
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
    ``reference_metrics``); p50/p95/p99 over every successful request of the run; steps:
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
    cold_starts: int
    loads: int
    unloads: int
    peak_gpu_memory_bytes: int | None
    gpu_memory_utilization_peak: float | None
    cost_per_hour_usd: float
    cost_per_million_usd: float | None
    reference_steps: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    warnings: list[str]


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
    hourly = run.instance_count * run.price_usd_per_hour
    tput = ref["throughput_qps"]
    warnings = []
    busy = run.generator_busy_s
    if busy and run.duration_s and max(busy) / run.duration_s > 0.5:
        warnings.append(f"load generator: the busiest worker was busy {100 * max(busy) / run.duration_s:.0f}% "
                        "of the run; its CPU limits throughput (add workers)")
    if run.translated:
        warnings.append(f"profiles translated to {run.gpu}: {', '.join(run.translated)}")
    return Summary(
        kind=run.kind, instance_type=run.instance_type, instance_count=run.instance_count, duration_s=run.duration_s,
        max_models_loaded=run.max_models_loaded,
        latency_ms=ref["latency_ms"], throughput_qps=tput, max_concurrent_users=ref["max_concurrent_users"],
        p50_ms=float(np.percentile(rt_ok, 50)) if len(rt_ok) else None,
        p95_ms=float(np.percentile(rt_ok, 95)) if len(rt_ok) else None,
        p99_ms=float(np.percentile(rt_ok, 99)) if len(rt_ok) else None,
        requests=int(len(a["outcome"])), failures=int((~ok).sum()), failures_by_cause=causes,
        cold_starts=int(a["cold"].sum()),
        loads=sum(1 for e in run.events if e.kind == "load"), unloads=sum(1 for e in run.events if e.kind == "unload"),
        peak_gpu_memory_bytes=peak,
        gpu_memory_utilization_peak=(peak / run.gpu_total_bytes) if peak and run.gpu_total_bytes else None,
        cost_per_hour_usd=hourly,
        cost_per_million_usd=(hourly / (tput * 3600) * 1e6) if tput else None,
        reference_steps=ref["steps"], steps=step_table(run), warnings=warnings,
    )
