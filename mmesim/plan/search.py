"""The planner's search: instance type x framework x memory threshold (x Triton max batch x
Triton instances, when the mix asks) x instance count.

For each candidate (type, framework, threshold) cheap bounds come first: the largest model
must fit an instance's memory budget beside the baseline; the instances must have the host
CPU to decode the peak's payloads and the GPU time to execute them at the best batch size
with the most overlap the profiles allow (both computed with the simulator's own figures
for the translated profiles), and the count must fit the budget. Then the smallest count
meeting every SLO is found by simulation: doubling from the lower bound until one meets
them, then bisection (this assumes more instances never hurt, as they do not in the
model); the first probe is the count that holds every copy in GPU memory at once, where
the answer often is. All candidates advance one probe per round, and a round's simulations run in
parallel (local processes or a Dask cluster). A candidate that cannot enter the ranked
table even at its lower bound stops early."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmesim.catalog import load_catalog
from mmesim.plan.evaluate import Task, evaluate, judge
from mmesim.plan.hosting import compare
from mmesim.plan.mix import HOURS_PER_MONTH, PlanMix, choose_profile, endpoint_config, mix_weights
from mmesim.plan.parallel import Runner
from mmesim.profile import ModelProfile
from mmesim.sim import Simulation
from mmesim.units import MiB
from mmesim.workload import Workload

CAPACITY_ROUNDS = 3
CAPACITY_MAX = 4.0      # capacity is searched up to this multiple of the peak


@dataclass
class Candidate:
    instance_type: str
    framework: str
    threshold: float
    profiles: list[ModelProfile]
    price: float
    max_batch: int | None = None            # Triton max_batch_size asked for (None: the profiles' own)
    triton_instances: int | None = None     # Triton instance_group count asked for (None: the profiles' own)
    n_min: int = 1
    n_max: int = 1
    n_fit: int = 1                          # instances holding every copy at once: the first probe
    bounds: list[str] = field(default_factory=list)
    infeasible: str | None = None          # why no count can work (from a bound)
    stopped: str | None = None              # why the search stopped early
    lo: int = 0                             # largest count known to miss an SLO
    hi: int | None = None                   # smallest count known to meet every SLO
    tried: dict[int, dict] = field(default_factory=dict)

    @property
    def label(self) -> str:
        triton = (f" b={self.max_batch}" if self.max_batch else "") + \
                 (f" i={self.triton_instances}" if self.triton_instances else "")
        return f"{self.instance_type} {self.framework} t={self.threshold:g}{triton}"

    @property
    def done(self) -> bool:
        return bool(self.infeasible or self.stopped) or (self.hi is not None and self.hi - self.lo <= 1) \
            or (self.hi is None and self.lo >= self.n_max)

    def next_count(self) -> int:
        if self.hi is None:
            if not self.tried:
                return min(self.n_max, max(self.n_min, self.n_fit))
            return min(self.n_max, max(self.lo + 1, 2 * self.lo))
        return (self.lo + self.hi) // 2

    def cost_per_hour(self, n: int) -> float:
        return n * self.price


# --- set-up ------------------------------------------------------------------------------
def workload(mix: PlanMix, scale: float = 1.0) -> Workload:
    """The traffic of one evaluation: the peak (times ``scale``) for the simulated duration."""
    t, sim = mix.traffic, mix.simulation
    common = {"name": mix.name, "payload_bytes": t.payload_bytes}
    if t.peak_rps is not None:
        return Workload(kind="poisson", rates=[{"end_s": sim.duration_s, "rate": t.peak_rps * scale}], **common)
    if t.users is not None:
        users = max(1, round(t.users * scale))
        return Workload(kind="users", wait_s=t.wait_s, **common,
                        stages=[{"end_s": sim.duration_s, "users": users, "spawn_rate": max(1.0, users / 5)}])
    return Workload(kind="trace", trace=t.trace, **common)


def eligible_types(mix: PlanMix) -> tuple[list[str], list[dict]]:
    """The instance types to search, and those left out with why: an MME runs only on the
    types SageMaker documents for it, unless the mix says ``mme_eligible_only: false``."""
    catalog = load_catalog()
    types = mix.candidates.instance_types or list(catalog.instances)
    if not mix.candidates.mme_eligible_only:
        return types, []
    keep = [t for t in types if catalog.mme_eligible(t)]
    why = (f"not a GPU multi-model endpoint type ({catalog.mme_support.source}, checked "
           f"{catalog.mme_support.checked})" if catalog.mme_support else "")
    return keep, [{"instance_type": t, "why": why} for t in types if t not in keep]


def candidates(mix: PlanMix, profiles: dict[str, ModelProfile]) -> list[Candidate]:
    catalog = load_catalog()
    out = []
    for name in eligible_types(mix)[0]:
        it = catalog.instance(name)
        for fw in mix.frameworks:
            chosen = [choose_profile(g, fw, profiles, it.gpu)
                      for g in mix.models]
            label = fw if fw != "*" else "+".join(sorted({p.framework for p in chosen}))
            for threshold in mix.candidates.memory_thresholds:
                for batch in mix.candidates.max_batch_sizes or [None]:
                    for instances in mix.candidates.triton_instances or [None]:
                        c = Candidate(it.name, label, threshold, [with_triton(p, batch, instances) for p in chosen],
                                      it.price_usd_per_hour, batch, instances)
                        _bound(c, mix)
                        out.append(c)
    return out


def with_triton(profile: ModelProfile, max_batch: int | None, instances: int | None) -> ModelProfile:
    """The profile served with another Triton config. ``max_batch`` is capped at the profile's
    own max batch (its execution times were measured up to there) and leaves a model that does
    not batch unbatched; each of ``instances`` execution instances loads its own copy of the
    model (Triton's PyTorch, ONNX and Python backends do; TensorRT shares the engine's weights,
    so for it the memory is an upper bound), so the memory per copy scales with the count."""
    tri, changes, update = profile.triton, {}, {}
    if max_batch is not None and tri.max_batch_size > 0:
        b = min(max_batch, tri.max_batch_size)
        changes.update(max_batch_size=b, preferred_batch_sizes=[x for x in tri.preferred_batch_sizes if x <= b])
    if instances is not None and instances != tri.instance_count:
        changes["instance_count"] = instances
        update["gpu_memory_bytes"] = profile.gpu_memory_bytes * instances // tri.instance_count
    if not changes:
        return profile
    return profile.model_copy(update={**update, "triton": tri.model_copy(update=changes)})


def _bound(c: Candidate, mix: PlanMix) -> None:
    """Cheap bounds on the count, with the simulator's own figures for the translated profiles."""
    ep = endpoint_config(mix, c.instance_type, c.threshold)
    probe = Simulation(c.profiles, ep, Workload(kind="poisson", rates=[{"end_s": 1, "rate": 0}],
                                                payload_bytes=mix.traffic.payload_bytes),
                       [1] * len(c.profiles), warm=False)
    inst = probe.instances[0]
    gpu_name = probe.gpu.name
    big = max(probe.profiles, key=lambda p: p.gpu_memory_bytes)
    if inst.baseline + big.gpu_memory_bytes > inst.budget:
        c.infeasible = (f"memory: {big.name} needs {big.gpu_memory_bytes / MiB:,.0f} MiB beside a "
                        f"{inst.baseline / MiB:,.0f} MiB baseline; the {gpu_name}'s budget at threshold "
                        f"{c.threshold:g} is {inst.budget / MiB:,.0f} MiB "
                        f"(+{(inst.baseline + big.gpu_memory_bytes) / inst.budget - 1:.0%})")
        return
    copies = {p.name: g.copies for p, g in zip(probe.profiles, mix.models)}
    resident = sum(p.gpu_memory_bytes * copies[p.name] for p in probe.profiles)
    c.n_fit = max(1, math.ceil(resident / max(1, inst.budget - inst.baseline)))
    months = mix.budget_usd_per_month
    n_budget = math.floor(months / (c.price * HOURS_PER_MONTH) + 1e-9) if months else mix.candidates.max_instances
    c.n_max = min(mix.candidates.max_instances, n_budget)
    if mix.traffic.peak_rps is not None:
        total = sum(g.share for g in mix.models)
        rates = [mix.traffic.peak_rps * g.share / total for g in mix.models]
        cpu_s = sum(r * probe.targets[i].decode_s for i, r in enumerate(rates))
        n_cpu = math.ceil(cpu_s / probe.instance_type.vcpus - 1e-9)
        overlap = max(p.gpu_overlap for p in probe.profiles)
        speedup = 1 + overlap * (probe.max_inflight - 1) if probe.max_inflight < 1 << 30 else math.inf
        gpu_s = sum(r * min(p.service_time(b) / b for b in range(1, p.triton.batch_limit + 1))
                    for r, p in zip(rates, probe.profiles))
        n_gpu = math.ceil(gpu_s / speedup - 1e-9) if math.isfinite(speedup) else 1
        c.n_min = max(1, n_cpu, n_gpu)
        c.bounds.append(f"host CPU to decode {cpu_s:.2f} core-s/s: >= {n_cpu}; GPU {gpu_s:.2f} s/s at best batch, "
                        f"overlap {overlap:.3f}: >= {n_gpu}")
    if c.n_min > c.n_max:
        if months and c.n_min > n_budget:
            cost = c.n_min * c.price * HOURS_PER_MONTH
            c.infeasible = (f"budget: at least {c.n_min} instances ({cost:,.0f} USD/month) > "
                            f"{months:,.0f} USD/month (+{cost / months - 1:.0%})")
        else:
            c.infeasible = f"capacity: at least {c.n_min} instances needed > max_instances {c.n_max}"
    c.lo = c.n_min - 1


def _task(mix: PlanMix, c: Candidate, n: int, weights: list[float], scale: float = 1.0,
          early_stop: bool = True) -> Task:
    ep = endpoint_config(mix, c.instance_type, c.threshold, n)
    copies = [g.copies for g in mix.models]
    limits = None
    if early_stop and mix.traffic.peak_rps is not None:
        # a Poisson count over the judged span stays under mean + 5 sigma
        mean = mix.traffic.peak_rps * scale * (mix.simulation.duration_s - mix.simulation.warmup_s)
        limits = {"expected_requests": mean + 5 * math.sqrt(mean) + 10, "error_rate": mix.slo.max_error_rate,
                  "p95_ms": mix.slo.p95_ms, "p99_ms": mix.slo.p99_ms}
    return Task(c.profiles, copies, weights, ep, workload(mix, scale), seed=mix.simulation.seed,
                warmup_s=mix.simulation.warmup_s, label=f"{c.label} x{n}", limits=limits)


# --- the search --------------------------------------------------------------------------
@dataclass
class Plan:
    mix: PlanMix
    candidates: list[Candidate]
    ranked: list[dict]
    infeasible: list[dict]               # the closest misses when nothing (or little) works
    capacity: dict[str, float]           # instance type -> max peak requests/s meeting the SLOs
    simulations: int
    whatif: dict | None = None           # the autoscaling what-if of the best plan
    left_out: list[dict] = field(default_factory=list)   # instance types not searched, and why
    hosting: object | None = None        # mmesim.plan.hosting.Hosting: MME against the alternatives

    @property
    def feasible(self) -> bool:
        return bool(self.ranked)


def plan(mix: PlanMix, profiles: dict[str, ModelProfile], *, cluster: str | None = None,
         workers: int | None = None, quiet: bool = False) -> Plan:
    """Best first: each round simulates the candidates whose smallest possible cost is lowest
    (a few per worker), so expensive types are pruned before they cost a simulation."""
    cands = candidates(mix, profiles)
    weights = mix_weights(mix)
    simulations = 0
    rnd = 0
    with Runner(cluster, workers, quiet) as runner:
        batch = max(4, 2 * runner.slots)
        while True:
            _prune(cands, mix.top)
            active = sorted((c for c in cands if not c.done), key=lambda c: (c.cost_per_hour(c.lo + 1), c.label))
            if not active:
                break
            rnd += 1
            probes = [(c, c.next_count()) for c in active[:batch]]
            results = runner.map(evaluate, [_task(mix, c, n, weights) for c, n in probes],
                                 label=f"round {rnd}: {len(probes)} simulations")
            simulations += len(probes)
            for (c, n), res in zip(probes, results):
                res["violations"] = judge(res, mix)
                c.tried[n] = res
                if all(v.ratio <= 1 for v in res["violations"]):
                    c.hi = n if c.hi is None else min(c.hi, n)
                else:
                    c.lo = max(c.lo, n)
        ranked = _rank(mix, cands)
        capacity, extra = _capacity(mix, cands, ranked, weights, runner)
        whatif = None
        if ranked and mix.endpoint.get("autoscaling") and mix.traffic.peak_rps is not None:
            top = ranked[0]
            best = next(c for c in cands if c.hi == top["count"] and c.label == top["candidate"])
            whatif = runner.map(whatif_minutes, [whatif_task(mix, best, weights)], label="autoscaling what-if")[0]
            extra += 1
        # its simulations are counted in it
        hosting = compare(mix, profiles, ranked, runner) if mix.compare_hosting else None
    return Plan(mix, cands, ranked, _misses(cands), capacity, simulations + extra, whatif, eligible_types(mix)[1],
                hosting)


def _prune(cands: list[Candidate], top: int) -> None:
    """Stop a candidate that cannot enter the top ``top`` rows even at its smallest possible count."""
    costs = sorted(c.cost_per_hour(c.hi) for c in cands if c.hi is not None)
    if len(costs) < top:
        return
    bar = costs[top - 1]
    for c in cands:
        if c.done:
            continue
        if c.cost_per_hour(c.lo + 1) > bar + 1e-9:
            c.stopped = f"outranked: {c.lo + 1}+ instances cost {c.cost_per_hour(c.lo + 1):.2f} USD/h > {bar:.2f}"


def _row(mix: PlanMix, c: Candidate, n: int) -> dict:
    m = c.tried[n]
    hourly = c.cost_per_hour(n)
    mean_rps = (mix.traffic.peak_rps or m["ok_rps"]) * mix.traffic.mean_multiplier
    binding = max(m["violations"], key=lambda v: v.ratio, default=None)
    row = {
        "instance_type": c.instance_type, "count": n, "framework": c.framework, "threshold": c.threshold,
        "max_batch": c.max_batch, "triton_instances": c.triton_instances, "candidate": c.label,
        "cost_per_hour_usd": hourly, "cost_per_month_usd": hourly * HOURS_PER_MONTH,
        "cost_per_million_usd": hourly / (mean_rps * 3600) * 1e6 if mean_rps else None,
        "p95_ms": m["p95_ms"], "p99_ms": m["p99_ms"], "error_rate": m["error_rate"],
        "cold_start_share": m["cold_start_share"], "models_resident_per_instance": m["models_resident"],
        "cache_hit_ratio": m["cache_hit_ratio"], "gpu_utilization": m["gpu_utilization"],
        "binding_slo": f"{binding.slo} ({binding.ratio:.0%} of limit)" if binding else "-",
        "decided_by": _decided_by(c, n),
        "profiles": ", ".join(p.name for p in c.profiles),
    }
    scaling = mix.endpoint.get("autoscaling")
    if scaling and mix.traffic.daily:
        lo, hi = scaling.get("min_instances", 1), scaling.get("max_instances", n)
        hours = [max(lo, min(hi, math.ceil(n * f - 1e-9))) for f in mix.traffic.daily]
        row["cost_per_month_autoscaled_usd"] = sum(hours) / 24 * c.price * HOURS_PER_MONTH
    return row


def _decided_by(c: Candidate, n: int) -> str:
    """Which bound set the count: the SLO one instance fewer misses by the most, or the
    lower bound that made one fewer not worth simulating."""
    below = c.tried.get(n - 1)
    if below is not None:
        missed = max((v for v in below["violations"] if v.ratio > 1), key=lambda v: v.ratio, default=None)
        if missed is not None:
            return f"{missed.slo} at {n - 1} ({missed.ratio:.3g}x its limit)"
    if n > 1 and n == c.n_min:
        return "lower bound: " + "; ".join(c.bounds)
    return "one instance is the least"


def _rank(mix: PlanMix, cands: list[Candidate]) -> list[dict]:
    rows = [_row(mix, c, c.hi) for c in cands if c.hi is not None]
    rows.sort(key=lambda r: (r["cost_per_hour_usd"], r["p95_ms"]))
    return rows[:mix.top]


def _misses(cands: list[Candidate]) -> list[dict]:
    """Candidates with no count meeting the SLOs: which constraint fails first, by how much
    (at the largest count simulated), closest first; then those ruled out by a bound."""
    out = []
    for c in cands:
        if c.hi is not None:
            continue
        if c.infeasible:
            out.append({"candidate": c.label, "count": None, "fails": c.infeasible, "worst": math.inf})
        elif c.tried:
            n = max(c.tried)
            missed = sorted((v for v in c.tried[n]["violations"] if v.ratio > 1), key=lambda v: -v.ratio)
            stop = c.tried[n].get("stopped_at_s")
            why = "; ".join(map(str, missed)) + (f" (already certain at {stop:g} simulated s)" if stop else "")
            out.append({"candidate": c.label, "count": n, "fails": why,
                        "worst": missed[0].ratio if missed else 1.0})
    out.sort(key=lambda r: r.pop("worst"))
    return out


def _capacity(mix, cands, ranked, weights, runner) -> tuple[dict[str, float], int]:
    """Per instance type (its cheapest plan): the highest peak, as a multiple of the mix's,
    that the same count still serves within the SLOs, by bisection over the load."""
    if mix.traffic.peak_rps is None or not ranked:
        return {}, 0
    best: dict[str, tuple[Candidate, int]] = {}
    shown = {r["instance_type"] for r in ranked}
    for c in cands:
        if c.hi is not None and c.instance_type in shown and (c.instance_type not in best
                                 or c.cost_per_hour(c.hi) < best[c.instance_type][0].cost_per_hour(c.hi)):
            best[c.instance_type] = (c, c.hi)
    state = {k: [1.0, None] for k in best}          # [largest load met, smallest load missed]
    sims = 0
    for _ in range(CAPACITY_ROUNDS):
        probes = []
        for k, (lo, hi) in state.items():
            probes.append((k, min(CAPACITY_MAX, 2 * lo) if hi is None else (lo + hi) / 2))
        probes = [(k, s) for k, s in probes if s > state[k][0] + 1e-6]
        if not probes:
            break
        tasks = [_task(mix, best[k][0], best[k][1], weights, scale=s) for k, s in probes]
        results = runner.map(evaluate, tasks, label="capacity")
        sims += len(tasks)
        for (k, s), res in zip(probes, results):
            if all(v.ratio <= 1 for v in judge(res, mix)):
                state[k][0] = s
            else:
                state[k][1] = s
    return {k: lo * mix.traffic.peak_rps for k, (lo, _) in state.items()}, sims


# --- autoscaling what-if -------------------------------------------------------------------
def whatif_task(mix: PlanMix, c: Candidate, weights: list[float]) -> Task:
    """The best plan with the mix's autoscaling policy under a step: a quiet start at the
    daily pattern's lowest hour (or a quarter of the peak), the peak long enough to scale
    out and settle, then quiet again long enough to scale back in."""
    p = endpoint_config(mix, c.instance_type, c.threshold).autoscaling
    low = min(mix.traffic.daily) if mix.traffic.daily else 0.25
    low = max(low, 0.05)
    t1 = 5 * p.period_s
    t2 = t1 + max(15 * 60.0, p.startup_s + (p.scale_out_datapoints + 2) * p.period_s + 300)
    t3 = t2 + (p.scale_in_datapoints + 3) * p.period_s
    peak = mix.traffic.peak_rps
    wl = Workload(kind="poisson", name=f"{mix.name} step", payload_bytes=mix.traffic.payload_bytes,
                  rates=[{"end_s": t1, "rate": peak * low}, {"end_s": t2, "rate": peak}, {"end_s": t3, "rate": peak * low}])
    ep = endpoint_config(mix, c.instance_type, c.threshold, p.min_instances)
    return Task(c.profiles, [g.copies for g in mix.models], weights, ep, wl, seed=mix.simulation.seed,
                label=f"{c.label} autoscaling {p.min_instances}..{p.max_instances}")


def whatif_minutes(task: Task) -> dict:
    """Run the what-if and summarise it per minute (a worker function, like ``evaluate``)."""
    from mmesim.report.scaling import per_minute

    sim = Simulation(task.profiles, task.endpoint, task.workload, task.copies, seed=task.seed, weights=task.weights)
    run = sim.run()
    a = run.records.arrays()
    ok = a["outcome"] == 0
    rows = per_minute(run)
    tl = list(run.instance_timeline)
    step_at = task.workload.rates[0].end_s
    peak_serving = max(s for _, _, s in tl)
    settled = min((t for t, _, s in tl if s == peak_serving and t >= step_at), default=step_at)
    window = (a["start"] >= step_at) & (a["start"] < max(settled, step_at + 60))
    p95s = [r["p95_ms"] for r in rows if step_at / 60 <= r["minute"] < max(settled, step_at + 60) / 60
            and math.isfinite(r["p95_ms"])]
    return {"label": task.label, "timeline": tl, "minutes": rows, "duration_s": run.duration_s,
            "min_serving": tl[0][2], "max_serving": peak_serving, "end_serving": tl[-1][2],
            "failed_while_scaling": int((window & ~ok).sum()), "worst_minute_p95_ms": max(p95s, default=float("nan")),
            "mean_instances": run.mean_instances(), "step_at_s": step_at, "settled_at_s": settled}
