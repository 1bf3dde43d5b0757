"""One what-if: simulate a candidate endpoint under the mix's traffic and measure what the
SLOs judge. Runs in a worker process (local or Dask): the task holds all it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mmesim.endpoint import EndpointConfig
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
    run = sim.run()
    out = measure(run, task.warmup_s)
    serving = sim.routable
    out["models_resident"] = float(np.mean([sum(1 for s in i.lru.values() if s.state == LOADED) for i in serving]))
    busy = run.utilization.get("GPUUtilization", [])
    judged = [v for per in busy for v in per[int(task.warmup_s):]]
    out["gpu_utilization"] = float(np.mean(judged)) if judged else None
    out["loads"] = sum(1 for e in run.events if e.kind == "load")
    out["instance_timeline"] = list(run.instance_timeline)
    return out
