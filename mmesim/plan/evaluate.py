"""One what-if: simulate a candidate endpoint under the mix's traffic, measure what the SLOs
judge, and judge it. Runs in a worker process (local or Dask): the task holds all it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmesim.endpoint import EndpointConfig
from mmesim.plan.mix import PlanMix
from mmesim.profile import ModelProfile
from mmesim.sim import Simulation
from mmesim.sim.instance import LOADED
from mmesim.workload import Workload


@dataclass
class Task:
    """A simulation to run: profiles and copies, the share of requests per target (None: the
    workload's popularity), the endpoint, the traffic, the seed; requests started before
    ``warmup_s`` are run but not judged."""

    profiles: list[ModelProfile]
    copies: list[int]
    weights: list[float] | None
    endpoint: EndpointConfig
    workload: Workload
    seed: int = 0
    warmup_s: float = 0.0
    label: str = ""
    limits: dict | None = None      # SLOs and the most requests expected: stop once one is surely missed


class _Doomed:
    """A progress callback that stops a simulation once an SLO is missed whatever comes next:
    more failures, or more successful requests slower than a percentile's limit, than that
    percentile allows of the most requests the run can judge."""

    def __init__(self, sim, task: Task):
        self.sim, self.warmup = sim, task.warmup_s
        lim = task.limits
        self.most = lim["expected_requests"]
        self.errors = lim.get("error_rate")
        self.slow = [(1 - q / 100, lim[k] / 1000.0) for q, k in ((95, "p95_ms"), (99, "p99_ms")) if lim.get(k)]
        self.stopped_at = None

    def __call__(self, now: float, end: float):
        if now <= self.warmup:
            return None
        a = self.sim.records.arrays()
        keep = a["start"] >= self.warmup
        ok = a["outcome"] == 0
        doomed = self.errors is not None and (keep & ~ok).sum() > self.errors * self.most
        rt = a["end"] - a["start"]
        for share, limit in self.slow:
            doomed = doomed or (keep & ok & (rt > limit)).sum() > share * self.most
        if doomed:
            self.stopped_at = now
            return False
        return None


def measure(run, warmup_s: float = 0.0) -> dict:
    """What the SLOs judge, over requests started from ``warmup_s`` on: latency percentiles
    of successful requests, error rate, cold-start share, cache hit ratio, served rate."""
    a = run.records.arrays()
    keep = a["start"] >= warmup_s
    outcome, cold, reached = a["outcome"][keep], a["cold"][keep], a["instance"][keep] >= 0
    ok = outcome == 0
    rt_ms = (a["end"][keep] - a["start"][keep])[ok] * 1000.0
    n = int(keep.sum())
    span = max(run.duration_s - warmup_s, 1e-9)

    def pct(q):
        return float(np.percentile(rt_ms, q)) if len(rt_ms) else math.inf

    return {
        "requests": n, "ok_rps": float(ok.sum() / span),
        "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
        "error_rate": float((~ok).sum() / n) if n else 1.0,
        "cold_start_share": float(cold.sum() / n) if n else 0.0,
        "cache_hit_ratio": float(1 - cold[reached].sum() / reached.sum()) if reached.any() else None,
        "mean_instances": run.mean_instances(),
    }


def evaluate(task: Task) -> dict:
    """Run ``task`` and return its measures (a small dict: cheap to send back from a worker)."""
    sim = Simulation(task.profiles, task.endpoint, task.workload, task.copies, seed=task.seed, weights=task.weights)
    guard = _Doomed(sim, task) if task.limits else None
    run = sim.run(progress=guard)
    out = measure(run, task.warmup_s)
    out["stopped_at_s"] = guard.stopped_at if guard else None
    serving = sim.routable
    out["models_resident"] = float(np.mean([sum(1 for s in i.lru.values() if s.state == LOADED) for i in serving]))
    busy = run.utilization.get("GPUUtilization", [])
    judged = [v for per in busy for v in per[int(task.warmup_s):]]
    out["gpu_utilization"] = float(np.mean(judged)) if judged else None
    out["loads"] = sum(1 for e in run.events if e.kind == "load")
    out["instance_timeline"] = list(run.instance_timeline)
    return out


@dataclass
class Violation:
    slo: str
    value: float
    limit: float

    @property
    def ratio(self) -> float:
        if self.limit == 0:
            return math.inf if self.value > 0 else 0.0
        return self.value / self.limit

    def __str__(self) -> str:
        fmt = {"p95_ms": "{:.0f} ms", "p99_ms": "{:.0f} ms", "error_rate": "{:.3%}",
               "cold_start_share": "{:.2%}", "cost_usd_per_month": "{:,.0f} USD"}.get(self.slo, "{:g}")
        over = f"+{self.ratio - 1:.0%}" if math.isfinite(self.ratio) else "any is too many"
        return f"{self.slo} {fmt.format(self.value)} > {fmt.format(self.limit)} ({over})"


def judge(measures: dict, mix: PlanMix) -> list[Violation]:
    """Every SLO with its measured value; the ones with ratio > 1 are missed."""
    slo = mix.slo
    out = []
    for key, limit in (("p95_ms", slo.p95_ms), ("p99_ms", slo.p99_ms), ("error_rate", slo.max_error_rate),
                       ("cold_start_share", slo.max_cold_start_share)):
        if limit is not None:
            out.append(Violation(key, measures[key], limit))
    return out
