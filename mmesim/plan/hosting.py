"""MME against the other ways SageMaker hosts many models, for the same models, traffic and
SLOs: a what-if `mmesim plan` runs after its search (and a library call, ``compare``).

- **Multi-model endpoint**: the planner's cheapest configuration (its search, on the
  MME-eligible types): models load on demand and share the instances' GPU memory.
- **One real-time endpoint per model**: every model always loaded on its own endpoint of
  single-GPU instances, at least one instance each (an endpoint cannot have zero instances),
  as many as its peak share needs; each model's type and framework chosen for it.
- **Inference components** (one endpoint, one instance type, multi-GPU types allowed):
  each model a component whose copies reserve at least one accelerator each
  (InferenceComponentComputeResourceRequirements.NumberOfAcceleratorDevicesRequired has a
  minimum of 1), plus the cores (NumberOfCpuCoresRequired, at least 0.25: what the copy's
  requests take on the host) and host memory they ask for; each GPU of an instance holds one
  copy, as long as its cores and memory last, and is modelled as one device; each component scales its own copy count with its
  traffic (Application Auto Scaling on the component's copies), at least one copy, and the
  instances are those the copies need, packed GPU by GPU.

What one copy on one GPU serves within the SLOs is found by simulation (the simulator with
one always-loaded model on one instance, the mix's SLOs, bisection over the request rate),
per model group, framework and GPU kind; the per-model rates are the plan's (share x
popularity x peak), so every option is judged on the same traffic. The search stops as soon
as one copy meets the SLOs at the group's busiest model's rate: beyond it the capacity changes
no count (such capacities are lower bounds, marked so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmesim.catalog import load_catalog
from mmesim.plan.evaluate import Task, evaluate, judge
from mmesim.plan.mix import HOURS_PER_MONTH, PlanMix, choose_profile, endpoint_config, mix_weights
from mmesim.profile import ModelProfile
from mmesim.workload import Workload

ROUNDS = 6              # bisection rounds over the rate (all capacities advance together)
CLOSE = 1.25            # stop once the largest rate met and the smallest missed are this close
MIN_CORES = 0.25        # NumberOfCpuCoresRequired's minimum: what a component copy reserves at least

SOURCES = {
    "multi-model endpoint": "SageMaker MME with Triton (the planner's own simulation); eligible types: "
                            "docs.aws.amazon.com/sagemaker/latest/dg/multi-model-support.html",
    "one endpoint per model": "SageMaker real-time endpoints: one model per endpoint, instance count >= 1 "
                              "(docs.aws.amazon.com/sagemaker/latest/dg/realtime-endpoints.html)",
    "inference components": "SageMaker inference components: NumberOfAcceleratorDevicesRequired >= 1 per copy, "
                            "CopyCount scaled per component (docs.aws.amazon.com/sagemaker/latest/APIReference/"
                            "API_InferenceComponentComputeResourceRequirements.html)",
}


@dataclass
class Option:
    """The cheapest configuration of one way of hosting the mix."""

    option: str
    configuration: str
    instances: int
    gpus: int
    usd_per_hour: float
    usd_per_month: float                     # sized for the peak all month
    usd_per_month_daily: float | None        # scaled to the daily pattern (None: not given)
    at_floor: int | None                     # models given the option's minimum (one instance, one GPU) and no more
    why: str
    source: str

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("option", "configuration", "instances", "gpus", "usd_per_hour",
                                              "usd_per_month", "usd_per_month_daily", "at_floor", "why")}


@dataclass
class Hosting:
    options: list[Option]                    # cheapest first (peak-sized monthly cost)
    capacity: list[dict]                     # req/s one copy on one GPU serves within the SLOs
    left_out: list[str] = field(default_factory=list)
    simulations: int = 0

    @property
    def verdict(self) -> str:
        """Which option wins and why, against the next cheapest."""
        if not self.options:
            return "no hosting option meets the SLOs"
        win = self.options[0]
        line = f"{win.option} wins at {win.usd_per_month:,.0f} USD/month: {win.why}"
        if len(self.options) > 1:
            nxt = self.options[1]
            line += (f"; {nxt.option} costs {nxt.usd_per_month / win.usd_per_month:.1f}x "
                     f"({nxt.usd_per_month:,.0f} USD/month): {nxt.why}")
        return line


def target_rates(mix: PlanMix) -> list[tuple[int, float]]:
    """(group index, peak req/s) per model copy, as the planner's weights spread the peak."""
    groups = [gi for gi, g in enumerate(mix.models) for _ in range(g.copies)]
    return [(gi, w * mix.traffic.peak_rps) for gi, w in zip(groups, mix_weights(mix))]


def _devices(mix: PlanMix) -> dict[str, str]:
    """One instance type per GPU kind to measure a copy's capacity on: the cheapest with that GPU."""
    catalog = load_catalog()
    names = mix.candidates.instance_types or list(catalog.instances)
    out: dict[str, str] = {}
    for name in names:
        it = catalog.instance(name)
        if it.gpu not in out or it.price_usd_per_hour < catalog.instance(out[it.gpu]).price_usd_per_hour:
            out[it.gpu] = it.name
    return out


def _probe_task(mix: PlanMix, profile: ModelProfile, instance_type: str, rate: float) -> Task:
    sim = mix.simulation
    mean = rate * (sim.duration_s - sim.warmup_s)
    limits = {"expected_requests": mean + 5 * math.sqrt(mean) + 10, "error_rate": mix.slo.max_error_rate,
              "p95_ms": mix.slo.p95_ms, "p99_ms": mix.slo.p99_ms}
    wl = Workload(kind="poisson", rates=[{"end_s": sim.duration_s, "rate": rate}],
                  payload_bytes=mix.traffic.payload_bytes)
    return Task([profile], [1], None, endpoint_config(mix, instance_type, 0.9, 1), wl, seed=sim.seed,
                warmup_s=sim.warmup_s, label=f"{profile.name} alone on {instance_type} at {rate:.1f} req/s",
                limits=limits)


def copy_capacity(mix: PlanMix, profiles: dict[str, ModelProfile], runner) -> tuple[list[dict], int]:
    """Per model group x framework x GPU kind: the highest rate one always-loaded copy on one
    GPU serves within every SLO (0 if even a trickle misses them)."""
    catalog = load_catalog()
    points = []
    for gpu, itype in _devices(mix).items():
        for fw in mix.frameworks:
            for gi, g in enumerate(mix.models):
                p = choose_profile(g, fw, profiles, gpu)
                guess = 1.0 / min(p.service_time(b) / b for b in range(1, p.triton.batch_limit + 1))
                it = catalog.instance(itype)
                cpu_s = p.handling_s(p.input_bytes) * p.host_cpu_speed / it.cpu_speed
                points.append({"group": gi, "model": g.name, "framework": p.framework, "gpu": gpu,
                               "instance_type": itype, "profile": p, "lo": 0.0, "hi": None, "guess": guess,
                               "host_bytes": p.host_memory_bytes, "cpu_s_per_request": cpu_s,
                               "price_per_gpu": it.price_usd_per_hour / it.gpus})
    busiest = {}
    for gi, r in target_rates(mix):
        busiest[gi] = max(busiest.get(gi, 0.0), r)
    sims = 0
    for _ in range(ROUNDS):
        probes = []
        for pt in points:
            lo, hi, need = pt["lo"], pt["hi"], busiest[pt["group"]]
            if lo >= need or (hi is not None and (hi <= 0.01 or (lo > 0 and hi / lo <= CLOSE))):
                continue
            rate = (min(pt["guess"], need) if lo == 0 else min(2 * lo, need)) if hi is None else \
                (math.sqrt(lo * hi) if lo else hi / 4)
            probes.append((pt, rate))
        if not probes:
            break
        results = runner.map(evaluate, [_probe_task(mix, pt["profile"], pt["instance_type"], r) for pt, r in probes],
                             label="hosting options: one copy per GPU")
        sims += len(probes)
        for (pt, rate), res in zip(probes, results):
            if all(v.ratio <= 1 for v in judge(res, mix)):
                pt["lo"] = rate
            else:
                pt["hi"] = rate
    rows = [{"model": pt["model"], "group": pt["group"], "framework": pt["framework"], "gpu": pt["gpu"],
             "instance_type": pt["instance_type"], "capacity_rps": pt["lo"],
             "at_least": pt["lo"] >= busiest[pt["group"]],
             "host_bytes_per_copy": pt["host_bytes"],
             "cores_per_copy": max(MIN_CORES, pt["lo"] * pt["cpu_s_per_request"]),
             "price_per_gpu_usd_per_hour": pt["price_per_gpu"]} for pt in points]
    return rows, sims


def _cap(c: dict) -> str:
    return ("at least " if c["at_least"] else "") + f"{c['capacity_rps']:.0f}"


def _copies(rate: float, capacity: float) -> int:
    return max(1, math.ceil(rate / capacity - 1e-9))


def endpoint_per_model(mix: PlanMix, capacity: list[dict]) -> Option | None:
    """Each model on its own endpoint of the single-GPU type and framework cheapest for it."""
    catalog = load_catalog()
    rates = target_rates(mix)
    best_per_group = {}
    for gi in range(len(mix.models)):
        choices = []
        for c in capacity:
            it = catalog.instance(c["instance_type"])
            if c["group"] != gi or c["capacity_rps"] <= 0 or it.gpus != 1:
                continue
            cost = sum(_copies(r, c["capacity_rps"]) for g, r in rates if g == gi) * it.price_usd_per_hour
            choices.append((cost, -c["capacity_rps"], c))
        if not choices:
            return None
        best_per_group[gi] = min(choices, key=lambda x: x[:2])[2]
    hourly, instances, floor, daily_cost = 0.0, 0, 0, 0.0
    daily = mix.traffic.daily
    for gi, r in rates:
        c = best_per_group[gi]
        price = catalog.instance(c["instance_type"]).price_usd_per_hour
        n = _copies(r, c["capacity_rps"])
        instances += n
        floor += n == 1
        hourly += n * price
        if daily:
            daily_cost += sum(_copies(r * f, c["capacity_rps"]) for f in daily) / 24 * price
    config = "; ".join(f"{mix.models[gi].name}: {c['instance_type']} {c['framework']} "
                       f"({_cap(c)} req/s per instance)" for gi, c in best_per_group.items())
    n_models = len(rates)
    return Option("one endpoint per model", config, instances, instances, hourly, hourly * HOURS_PER_MONTH,
                  daily_cost * HOURS_PER_MONTH if daily else None, floor,
                  f"{floor} of {n_models} models get one instance each, their peak needing no more: the floor (an "
                  "endpoint has at least one instance)", SOURCES["one endpoint per model"])


def inference_components(mix: PlanMix, capacity: list[dict]) -> Option | None:
    """Every model a component on one endpoint; the instance type (multi-GPU ones included)
    that needs the fewest dollars for the copies, packed one per GPU."""
    catalog = load_catalog()
    rates = target_rates(mix)
    daily = mix.traffic.daily
    names = mix.candidates.instance_types or list(catalog.instances)
    best = None
    for name in names:
        it = catalog.instance(name)
        per_group = {}
        for gi in range(len(mix.models)):
            here = [c for c in capacity if c["group"] == gi and c["gpu"] == it.gpu and c["capacity_rps"] > 0]
            if not here:
                break
            per_group[gi] = max(here, key=lambda c: c["capacity_rps"])       # the better framework on this GPU
        else:
            slots = copies_per_instance(it, per_group.values())
            if slots < 1:
                continue
            copies = [_copies(r, per_group[gi]["capacity_rps"]) for gi, r in rates]
            gpus = sum(copies)
            n = math.ceil(gpus / slots)
            hourly = n * it.price_usd_per_hour
            if best is None or hourly < best[0]:
                best = (hourly, it, per_group, copies, gpus, n)
    if best is None:
        return None
    hourly, it, per_group, copies, gpus, n = best
    slots = copies_per_instance(it, per_group.values())
    daily_cost = None
    if daily:
        hours = [math.ceil(sum(_copies(r * f, per_group[gi]["capacity_rps"]) for gi, r in rates) / slots)
                 for f in daily]
        daily_cost = sum(hours) / 24 * it.price_usd_per_hour * HOURS_PER_MONTH
    floor = sum(1 for n_copies in copies if n_copies == 1)
    config = (f"{n} x {it.name} ({slots} cop{'y' if slots == 1 else 'ies'} per instance, {it.gpus} "
              f"GPU{'s' if it.gpus > 1 else ''}), {gpus} copies: "
              + "; ".join(f"{mix.models[gi].name} {c['framework']} {_cap(c)} req/s per copy"
                          for gi, c in per_group.items()))
    return Option("inference components", config, n, gpus, hourly, hourly * HOURS_PER_MONTH, daily_cost, floor,
                  f"{floor} of {len(rates)} models get one copy each, their peak needing no more, and each copy "
                  "holds a whole GPU (it reserves at least one accelerator)", SOURCES["inference components"])


def copies_per_instance(it, groups) -> int:
    """Component copies one instance holds: one per GPU, fewer if the cores or the host memory
    the copies reserve (each as much as the most demanding group's) run out first."""
    groups = list(groups)
    cores = max(c["cores_per_copy"] for c in groups)
    host = max(c["host_bytes_per_copy"] for c in groups)
    by_cores = math.floor(it.vcpus / cores + 1e-9)
    by_memory = math.floor(it.host_memory_bytes / host) if host else it.gpus
    return min(it.gpus, by_cores, by_memory)


def multi_model_endpoint(mix: PlanMix, ranked: list[dict]) -> Option | None:
    """The planner's cheapest MME."""
    if not ranked:
        return None
    top = ranked[0]
    n_models = sum(g.copies for g in mix.models)
    resident = top.get("models_resident_per_instance") or 0
    hit = top.get("cache_hit_ratio")
    why = (f"{top['count']} instance(s) serve {n_models} models by loading them on demand "
           f"({resident:.0f} resident per instance" + (f", {hit:.1%} of requests find theirs loaded" if hit is not None
                                                       else "") + "): memory is shared, not reserved per model")
    return Option("multi-model endpoint", f"{top['count']} x {top['candidate']}", top["count"], top["count"],
                  top["cost_per_hour_usd"], top["cost_per_month_usd"], top.get("cost_per_month_autoscaled_usd"), None,
                  why, SOURCES["multi-model endpoint"])


def compare(mix: PlanMix, profiles: dict[str, ModelProfile], ranked: list[dict], runner) -> Hosting:
    """Every hosting option's cheapest answer for the mix, cheapest first."""
    if mix.traffic.peak_rps is None:
        return Hosting([], [], ["other hosting options need the traffic as peak_rps (per-model rates)"])
    capacity, sims = copy_capacity(mix, profiles, runner)
    options, left = [], []
    for name, opt in (("multi-model endpoint", multi_model_endpoint(mix, ranked)),
                      ("one endpoint per model", endpoint_per_model(mix, capacity)),
                      ("inference components", inference_components(mix, capacity))):
        if opt is None:
            left.append(f"{name}: no configuration meets the SLOs")
        else:
            options.append(opt)
    options.sort(key=lambda o: o.usd_per_month)
    return Hosting(options, capacity, left, sims)
