"""Endpoints too big for one process: simulate them a group of instances at a time.

SageMaker's MME routes a request by its target model to an instance that holds that model,
so an endpoint splits along models: each partition is one instance (or a few) with the models
assigned to it, fed the requests for those models only, simulated on its own (in parallel,
on local processes or a Dask cluster); the records are merged into one Run and one Summary.

The approximation, stated: models are assigned to partitions once, before the run, and stay
there. A model the whole endpoint would pre-load goes where the simulator's own pre-load puts
it; the others go largest expected GPU work first to the least loaded partition (LPT). The
whole endpoint's router instead places a model that is loaded nowhere on the least busy
instance at that moment (again after every eviction), and spreads a hot model to a second
instance once its first has ``spread_inflight`` requests in flight; partitions cannot do
either across partitions (within one, they do). So the approximation holds while the models
an instance serves stay put (they fit, or one instance's LRU keeps its own), and drifts when
evicted models wander between instances.
Open-loop Poisson traffic splits exactly (each partition gets a Poisson stream at its share);
closed-loop users are split by share, which is an approximation. ``compare`` measures the
error against the unpartitioned simulation."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import numpy as np

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.plan.parallel import run_tasks
from mmesim.profile import ModelProfile
from mmesim.results.records import Records, Run
from mmesim.sim import Simulation
from mmesim.workload import Workload


@dataclass
class Part:
    index: int
    profiles: list[ModelProfile]
    copies: list[int]
    weights: list[float]          # this partition's targets keep their weight, the others 0
    endpoint: EndpointConfig
    workload: Workload
    seed: int


def _part_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def partitions(profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload, copies: list[int],
               seed: int = 0, instances_per_partition: int = 1, weights: list[float] | None = None) -> list[Part]:
    """Split the endpoint into ``instance_count / instances_per_partition`` partitions."""
    if endpoint.autoscaling is not None:
        raise ConfigError("a partitioned endpoint has a fixed instance count", field="autoscaling")
    if workload.kind == "trace":
        raise ConfigError("partitioning needs a poisson or users workload, not a trace", field="kind",
                          value=workload.kind)
    n_inst = endpoint.instance_count
    if n_inst % instances_per_partition:
        raise ConfigError(f"instance_count {n_inst} is not a multiple of the partition size",
                          field="instances_per_partition", value=instances_per_partition)
    k = n_inst // instances_per_partition
    # where the whole endpoint would hold each model at the start: its own pre-load decision
    probe = Simulation(profiles, endpoint, workload, copies, warm=True, weights=weights)
    w = probe.target_weights() or [1.0] * len(probe.targets)
    total = sum(w)
    owner = [-1] * len(w)
    for inst in probe.instances:
        for tid in inst.slots:
            owner[tid] = inst.index // instances_per_partition
    # the others: largest expected GPU work first, to the partition with the least so far (LPT)
    work = [(wt / total) * t.profile.service_time(1) for wt, t in zip(w, probe.targets)]
    loads = [0.0] * k
    for tid, p in enumerate(owner):
        if p >= 0:
            loads[p] += work[tid]
    heap = [(load, p) for p, load in enumerate(loads)]
    heapq.heapify(heap)
    for tid in sorted((t for t in range(len(w)) if owner[t] < 0), key=lambda i: -work[i]):
        load, p = heapq.heappop(heap)
        owner[tid] = p
        heapq.heappush(heap, (load + work[tid], p))
    parts = []
    for p in range(k):
        wp = [wt if owner[i] == p else 0.0 for i, wt in enumerate(w)]
        share = sum(wp) / total
        if share <= 0:
            continue
        parts.append(Part(p, profiles, copies, wp,
                          endpoint.model_copy(update={"instance_count": instances_per_partition}),
                          _scale(workload, share), _part_seed(seed, p)))
    return parts


def _scale(workload: Workload, share: float) -> Workload:
    if workload.kind == "poisson":
        return workload.model_copy(update={"rates": [r.model_copy(update={"rate": r.rate * share})
                                                     for r in workload.rates]})
    return workload.model_copy(update={"stages": [s.model_copy(update={"users": round(s.users * share)})
                                                  for s in workload.stages]})


def run_part(part: Part) -> Run:
    """One partition (a worker function)."""
    return Simulation(part.profiles, part.endpoint, part.workload, part.copies, seed=part.seed,
                      weights=part.weights).run()


def merge(runs: list[Run], per_partition: int) -> Run:
    """One Run from the partitions' runs: instances renumbered partition by partition."""
    first = runs[0]
    records = Records(first.records.models)
    events, memory, peaks, busy = [], [], [], []
    util: dict[str, list] = {}
    for k, run in enumerate(runs):
        off = k * per_partition
        r = run.records
        records.start.extend(r.start)
        records.end.extend(r.end)
        records.model.extend(r.model)
        inst = np.frombuffer(r.instance, dtype=np.int16)
        records.instance.frombytes(np.where(inst >= 0, inst + off, inst).astype(np.int16).tobytes())
        records.outcome.extend(r.outcome)
        records.cold.extend(r.cold)
        events.extend(replace(e, instance=e.instance + off) for e in run.events)
        memory.extend((t, i + off, b) for t, i, b in run.memory)
        peaks.extend((t, i + off, p) for t, i, p in run.inflight_peaks)
        busy.extend(run.gpu_busy_s)
        for metric, per in run.utilization.items():
            util.setdefault(metric, []).extend(per)
    merged = replace(first, records=records, users=_sum_users(runs), events=sorted(events, key=lambda e: e.time),
                     memory=memory, inflight_peaks=peaks, utilization=util, gpu_busy_s=busy,
                     instance_count=per_partition * len(runs), max_models_loaded=None, memory_trace=[])
    merged.cpu_busy_s = [x for run in runs for x in run.cpu_busy_s]      # per instance
    return merged


def _sum_users(runs: list[Run]) -> list[tuple[float, int]]:
    """Closed loop: the users of all partitions together."""
    changes = sorted({t for run in runs for t, _ in run.users})
    return [(t, sum(run.users_at(t) for run in runs)) for t in changes]


def simulate_partitioned(profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload,
                         copies: list[int], seed: int = 0, instances_per_partition: int = 1,
                         weights: list[float] | None = None, cluster: str | None = None,
                         workers: int | None = None, quiet: bool = False) -> Run:
    parts = partitions(profiles, endpoint, workload, copies, seed, instances_per_partition, weights)
    runs = run_tasks(run_part, parts, cluster=cluster, workers=workers, quiet=quiet,
                     label=f"{len(parts)} partitions")
    return merge(runs, instances_per_partition)


def compare(profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload, copies: list[int],
            seed: int = 0, instances_per_partition: int = 1, workers: int | None = None,
            quiet: bool = True) -> dict:
    """The partitioned and the whole simulation of one endpoint, side by side, with the
    relative error of the partitioned one on the figures a plan judges."""
    from mmesim.results.summary import summarize

    whole = summarize(Simulation(profiles, endpoint, workload, copies, seed=seed).run())
    split = summarize(simulate_partitioned(profiles, endpoint, workload, copies, seed, instances_per_partition,
                                           workers=workers, quiet=quiet))
    out = {}
    for key in ("requests", "failures", "p50_ms", "p95_ms", "p99_ms", "cold_starts", "loads", "unloads"):
        a, b = getattr(whole, key), getattr(split, key)
        out[key] = {"whole": a, "partitioned": b,
                    "error": (b - a) / a if a else (0.0 if not b else float("inf"))}
    return out
