"""The multi-model endpoint: targets, routing, instances, the client, and the clock.

A request's path: the client serialises it on its worker (client CPU), the platform adds
its overhead and the payload crosses the network, the router picks an instance, the
instance admits it (or sheds it when overloaded), loads the model if needed, decodes the
payload on its vCPUs, and Triton queues, batches and executes it on the shared GPU. The
client gives up at the invocation timeout; the server does not notice and finishes anyway.
A request whose model is not loaded ``model_ready_timeout_s`` after it reached the instance
(or at the invocation timeout, if that comes first) fails with ModelNotReadyException and
leaves the instance; the download or load it was waiting for goes on.

Only model-level work creates SimPy events; the FIFO resources whose order never changes
(client workers, host CPUs) are computed arithmetically, which keeps the simulator fast.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import simpy

from mmesim.catalog import CPU, MiB, load_catalog
from mmesim.endpoint import EndpointConfig, host_placement
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.results.records import MODEL_NOT_READY, OUTCOMES, SERVER_PARTS, TIMEOUT, Records, Run
from mmesim.sim.autoscaler import Autoscaler
from mmesim.sim.client import Client
from mmesim.sim.events import after
from mmesim.sim.host import request_handling
from mmesim.sim.instance import Instance
from mmesim.sim.policy import inflight_limit, memory_budget, ready_wait_s, route
from mmesim.sim.random import check_seed, streams
from mmesim.sim.translate import cpu_profiles_on_gpu, other_processor, translate
from mmesim.workload import Popularity, Workload, read_trace

UNLIMITED = 1 << 30


@dataclass(eq=False)
class Target:
    """One name a client can invoke (a copy of a profile's model), as the endpoint sees it."""

    id: int
    name: str
    profile: ModelProfile         # already translated to the instance's GPU
    request_name: str             # the name Locust reports it under
    payload_bytes: int
    client_cost_s: float          # client CPU to build and send one request
    network_s: float              # payload over the network, plus platform overhead
    reply_s: float                # response over the network
    decode_s: float               # host CPU on the instance to handle the request and parse the payload
    frontend: object = None       # on shared cores, that CPU's factor by the front end's idle time (or None)


class Request:
    __slots__ = ("start", "deadline", "target", "user", "slot", "instance", "cold", "done", "waiting", "arrived",
                 "queued", "began")

    def __init__(self, start: float, deadline: float, target: Target, user):
        self.start, self.deadline, self.target, self.user = start, deadline, target, user
        self.slot = None
        self.instance = -1
        self.cold = self.done = self.waiting = False
        # when it reached its instance; entered its model's queue; when an execution took it
        self.arrived = self.queued = self.began = 0.0


def check_distinct(profiles: list[ModelProfile]) -> None:
    """A profile given twice would make two sets of copies under one set of names."""
    names = [p.name for p in profiles]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError("profile given twice (for more copies, use --copies)", field="profile", value=twice[0])


def target_names(profiles: list[ModelProfile], copies: list[int]) -> list[tuple[str, int, str]]:
    """(name, profile index, request name) per copy: ``<model>-v<i>`` as the reference named
    its copies, or ``<profile name>-v<i>`` when two profiles share a model; Locust reports
    every copy under the request name ``<model>`` (or the profile name)."""
    check_distinct(profiles)
    models = [p.model for p in profiles]
    out = []
    for pi, (p, n) in enumerate(zip(profiles, copies)):
        base = p.model if models.count(p.model) == 1 else p.name
        out.extend((f"{base}-v{i}", pi, base) for i in range(n))
    return out


def popularity_weights(pop: Popularity, profile_of_target: list[str]) -> list[float]:
    """Relative request weight of each target (in ``target_names`` order; ``profile_of_target``
    names each one's profile): uniform, zipf over the order, top-n, or a mix of profiles
    spread evenly over each profile's copies. The simulator and the load test both draw from it."""
    n = len(profile_of_target)
    if pop.kind == "uniform":
        return [1.0] * n
    if pop.kind == "zipf":
        return [1.0 / (k ** pop.s) for k in range(1, n + 1)]
    if pop.kind == "top-n":
        hot = min(pop.n, n)
        cold_share = (1 - pop.share) / (n - hot) if n > hot else 0.0
        return [pop.share / hot] * hot + [cold_share] * (n - hot)
    names = set(profile_of_target)
    unknown = set(pop.weights) - names
    if unknown:
        raise ConfigError(f"mix weights name profiles not in the endpoint ({', '.join(sorted(names))})",
                          field="popularity.weights", value=sorted(unknown))
    per = {name: profile_of_target.count(name) for name in names}
    return [pop.weights.get(name, 0.0) / per[name] for name in profile_of_target]


class Simulation:
    def __init__(self, profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload,
                 copies: list[int], seed: int = 0, warm: bool = True, weights: list[float] | None = None,
                 server_timing: bool = False):
        """``weights``: an explicit share of requests per target (in target order), overriding
        the workload's popularity; targets of weight 0 are never asked for nor pre-loaded (how
        a planner's mix or one partition of a large endpoint is given). ``server_timing``: keep
        each executed request's time in its model's queue and in its execution (the run's
        ``server_ms``, to compare with Triton's trace of a measurement)."""
        if not profiles:
            raise ConfigError("at least one profile is needed", field="profile")
        if len(copies) != len(profiles) or any(c < 1 for c in copies):
            raise ConfigError("one copy count >= 1 per profile is needed", field="copies", value=copies)
        self.unweighted = workload.check_profiles(p.name for p in profiles)
        catalog = load_catalog()
        self.endpoint, self.workload, self.seed = endpoint, workload, seed
        self.copies = list(copies)
        self.instance_type = endpoint.instance()
        self.gpu = catalog.gpu_of(self.instance_type)
        self.profiles = [translate(p, self.instance_type) for p in profiles]
        self.env = simpy.Environment()
        rs = streams(seed, ("waits", "targets", "noise", "placement"))
        self.waits, self._targets_rng, self.noise = rs["waits"], rs["targets"], rs["noise"]
        self.placement = rs["placement"]          # which woken threads displace a running one (host_wakeups)
        self.host_wakeups = host_placement(endpoint.host_wakeups, self.profiles, self.instance_type.name)
        self.targets = self._make_targets(copies)
        if weights is not None and (len(weights) != len(self.targets) or min(weights) < 0 or sum(weights) <= 0):
            raise ConfigError(f"needs one weight >= 0 per target ({len(self.targets)}), not all 0", field="weights")
        self.weights = weights
        self.max_inflight = inflight_limit(endpoint.max_inflight_per_instance, self.profiles) or UNLIMITED
        self.records = Records([t.name for t in self.targets])
        # per executed request (s): queue, compute, execution start, time inside the server (arrival to answer)
        self._server = tuple(array("d") for _ in SERVER_PARTS) if server_timing else None
        self.events: list = []
        self.memory: list[tuple[float, int, int]] = []
        scaling = endpoint.autoscaling
        count = endpoint.instance_count if scaling is None else \
            min(scaling.max_instances, max(scaling.min_instances, endpoint.instance_count))
        self.instances = [Instance(self, i) for i in range(count)]
        self.routable = list(self.instances)       # in service: what the router may choose
        self.instance_timeline: list[tuple[float, int, int]] = []
        self.autoscaler = Autoscaler(self, scaling) if scaling else None
        self.pick_target = self._picker()
        self.client = Client(self, workload)
        self._pending: deque[Request] = deque()
        self._reaper_wake = None
        self._timeout = endpoint.invocation_timeout_s
        self._ready_timeout = endpoint.model_ready_timeout_s
        self._not_ready: deque[tuple[float, Request]] = deque()   # requests waiting for a model, by deadline
        self._ready_timer = False
        self.inflight_peaks: list[tuple[float, int, int]] = []
        self.utilization: dict[str, list[list[float]]] = {}
        self.warm_count = self._warm() if warm else 0
        for inst in self.instances:
            self.memory.append((0.0, inst.index, inst.used))
        self.trace = self._read_trace() if workload.kind == "trace" else []

    # -- set-up --------------------------------------------------------------------------
    def _make_targets(self, copies: list[int]) -> list[Target]:
        wl, it, ep = self.workload, self.instance_type, self.endpoint
        gen = wl.generator
        shared = self.gpu.key == CPU     # a CPU-only host: everything on one pool of cores
        bw = it.network_bytes_per_s
        out = []
        for tid, (name, pi, base) in enumerate(target_names(self.profiles, copies)):
            p = self.profiles[pi]
            payload = wl.payload_bytes or p.input_bytes
            decode_s, frontend = request_handling(p, payload, it.cpu_speed, shared)
            out.append(Target(
                id=tid, name=name, profile=p, request_name=base, payload_bytes=payload,
                client_cost_s=(gen.timed_cpu_s_per_request + gen.cpu_s_per_byte * payload) if gen else 0.0,
                network_s=ep.overhead_s + payload / bw, reply_s=p.output_bytes / bw,
                decode_s=decode_s, frontend=frontend))
        return out

    def target_weights(self) -> list[float] | None:
        """Relative share of requests per target, in target order: the explicit weights or the
        workload's popularity; None when uniform."""
        if self.weights is not None:
            return self.weights
        if self.workload.popularity.kind == "uniform":
            return None
        return popularity_weights(self.workload.popularity, [t.profile.name for t in self.targets])

    def _picker(self):
        """A function returning the next request's target, per ``target_weights``."""
        targets, rng = self.targets, self._targets_rng
        n = len(targets)
        weights = self.target_weights()
        if weights is None:
            return lambda: targets[int(rng.random() * n)]
        cdf = list(accumulate(weights))
        total = cdf[-1]
        bisect_right = bisect.bisect_right
        last = n - 1
        return lambda: targets[min(bisect_right(cdf, rng.random() * total), last)]

    def _warm(self) -> int:
        """Load copies before the run, round-robin over instances, as many as fit."""
        count = 0
        wanted = self.targets if self.weights is None else \
            [t for t, w in sorted(zip(self.targets, self.weights), key=lambda tw: -tw[1]) if w > 0]   # hottest first
        for i, target in enumerate(wanted):
            if self.instances[i % len(self.instances)].preload(target):
                count += 1
        return count

    def _read_trace(self) -> list[tuple[float, Target]]:
        """The trace as (time, target), every line checked before the run starts."""
        by_name = {t.name: t for t in self.targets}
        return [(when, by_name[model]) for when, model in read_trace(self.workload.trace, targets=by_name)]

    def add_instance(self) -> Instance:
        """A new, empty instance joins the endpoint and the router (the autoscaler's hook)."""
        inst = Instance(self, len(self.instances))
        self.instances.append(inst)
        self.routable.append(inst)
        self.memory.append((self.env.now, inst.index, inst.used))
        return inst

    # -- the request path ----------------------------------------------------------------
    def send(self, target: Target, worker, user=None) -> None:
        """A client starts a request now; a closed-loop ``user`` is told when it has its answer."""
        env = self.env
        now = env.now
        req = Request(now, now + self._timeout, target, user)
        cost = target.client_cost_s
        if worker.pace is not None:      # the client's CPU by its process's pace
            factor, untimed = worker.paced(now)
            cost *= factor
            if user is not None:
                user.untimed = untimed
        if worker.cores is not None:     # the generator computes on the endpoint's host: its time is shared
            worker.submit(cost, self._sent, req)
        else:
            leave = worker.send(now, cost)
            after(env, leave - now + target.network_s, req, self._arrive)
        self._pending.append(req)
        wake = self._reaper_wake
        if wake is not None:           # the reaper sleeps until a request is pending
            self._reaper_wake = None
            wake.succeed()

    def _sent(self, req: Request) -> None:
        after(self.env, req.target.network_s, req, self._arrive)

    def _arrive(self, ev) -> None:
        req = ev.value
        if req.done:
            return
        req.arrived = self.env.now
        inst = self._route(req.target) if len(self.routable) > 1 else self.routable[0]
        req.instance = inst.index
        inst.admit(req)

    def _route(self, target: Target) -> Instance:
        """Least busy instance that has the model (loaded or on its way); see policy.route."""
        return route(self.routable, target, self.endpoint.spread_inflight)

    def reply(self, req: Request, outcome: int | str) -> None:
        """The answer (or a failure) for ``req``; the client has it after the reply crosses back."""
        if req.done:
            return
        req.done = True
        if type(outcome) is str:
            outcome = OUTCOMES.index(outcome)
        delay = req.target.reply_s if outcome == 0 else 0.0
        self.records.append(req.start, self.env.now + delay, req.target.id, req.instance, outcome, req.cold)
        if outcome == 0 and self._server is not None:     # executed: it ends now
            self._server[0].append(req.began - req.queued)
            self._server[1].append(self.env.now - req.began)
            self._server[2].append(req.began)
            self._server[3].append(self.env.now - req.arrived)
        if req.user is not None:
            self.client.answered(req.user, delay)

    def wait_for_model(self, req: Request) -> None:
        """``req`` waits for its model on its instance: it fails ``model_ready_timeout_s`` from
        now if still waiting. Deadlines come in arrival order, so one timer serves them all;
        none is needed when the invocation timeout always comes first (the default: both 60 s)."""
        if ready_wait_s(self._ready_timeout, self._timeout) >= self._timeout:
            return          # the invocation timeout comes first: the reaper answers ModelNotReadyException
        self._not_ready.append((self.env.now + self._ready_timeout, req))
        if not self._ready_timer:
            self._ready_timer = True
            after(self.env, self._ready_timeout, None, self._not_ready_expired)

    def _not_ready_expired(self, ev) -> None:
        now, queue = self.env.now, self._not_ready
        while queue and queue[0][0] <= now:
            req = queue.popleft()[1]
            if req.waiting and not req.done:
                self._give_up_waiting(req)
        self._ready_timer = bool(queue)
        if queue:
            after(self.env, queue[0][0] - now, None, self._not_ready_expired)

    def _give_up_waiting(self, req: Request) -> None:
        self.instances[req.instance].abandon(req)
        self.reply(req, MODEL_NOT_READY)

    def _reaper(self):
        """Fails requests whose client has waited the invocation timeout. Sleeps until the
        oldest unanswered request's deadline, so it costs an event only when one expires."""
        env, pending = self.env, self._pending
        while True:
            while pending and pending[0].done:
                pending.popleft()
            if not pending:
                self._reaper_wake = env.event()
                yield self._reaper_wake
                continue
            head = pending[0]
            if head.deadline > env.now:
                yield env.timeout(head.deadline - env.now)
                continue
            pending.popleft()
            if head.waiting:
                self._give_up_waiting(head)
            else:
                self.reply(head, TIMEOUT)

    def _sampler(self):
        """Once a second, per instance: the most requests in flight any arrival met, and
        GPU and host CPU busy time (CloudWatch's GPUUtilization, CPUUtilization: percent,
        CPU summed over cores; CPU time counts in the second its work was scheduled)."""
        gpu = [[] for _ in self.instances]
        cpu = [[] for _ in self.instances]
        self.utilization = {"GPUUtilization": gpu, "CPUUtilization": cpu}
        last = [(0.0, 0.0) for _ in self.instances]
        while True:
            yield self.env.timeout(1.0)
            while len(last) < len(self.instances):      # added by the autoscaler: idle before it existed
                seconds = len(gpu[0]) if gpu else 0
                gpu.append([0.0] * seconds)
                cpu.append([0.0] * seconds)
                last.append((0.0, 0.0))
            for inst in self.instances:
                i = inst.index
                self.inflight_peaks.append((self.env.now, i, inst.peak))
                inst.peak = inst.inflight
                g, c = inst.gpu.busy_until_now(), inst.cpu_busy_until_now()
                gpu[i].append(100.0 * (g - last[i][0]))
                cpu[i].append(100.0 * (c - last[i][1]))
                last[i] = (g, c)

    # -- running -------------------------------------------------------------------------
    def run(self, duration: float | None = None, progress=None) -> Run:
        """Simulate ``duration`` seconds (default: the workload's); ``progress(now, end)``
        is called about every simulated 5 seconds, and stops the run there if it returns False."""
        end = duration if duration is not None else self.workload.duration_s
        self.client.start()
        self.env.process(self._reaper())
        self.env.process(self._sampler())
        if self.autoscaler:
            self.autoscaler.start()
        step = 5.0
        t = 0.0
        while t < end:
            t = min(end, t + step)
            self.env.run(until=t)
            if progress and progress(t, end) is False:
                end = t
                break
        return self._result(end)

    def _result(self, duration: float) -> Run:
        it = self.instance_type
        workers = self.client.workers
        return Run(
            records=self.records, duration_s=duration, users=list(self.client.timeline),
            user_steps=list(self.workload.user_steps),
            request_name={t.name: t.request_name for t in self.targets},
            events=self.events, memory=self.memory, inflight_peaks=self.inflight_peaks,
            utilization=self.utilization, gpu_total_bytes=self.gpu.nvml_total_bytes,
            gpu_busy_s=[i.gpu.busy_until_now() for i in self.instances],
            instance_type=it.name, instance_count=len(self.instances), price_usd_per_hour=it.price_usd_per_hour,
            kind="prediction", instance_timeline=self.instance_timeline,
            seed=self.seed, gpu=self.gpu.key, copies_loaded_at_start=self.warm_count,
            server_ms=None if self._server is None else
            {part: np.frombuffer(a) * 1e3 for part, a in zip(SERVER_PARTS, self._server)},
            targets=len(self.targets),
            max_inflight_per_instance=None if self.max_inflight == UNLIMITED else self.max_inflight,
            cpu_busy_s=[i.cpu_busy_until_now() for i in self.instances], vcpus=it.vcpus,
            generator_workers=len(workers), generator_busy_s=[w.busy_s for w in workers],
            profiles=[p.name for p in self.profiles],
            translated=[p.name for p in self.profiles if p.provenance.method == "translated"],
            cpu_figures=cpu_profiles_on_gpu(self.profiles, it),
            other_processor=other_processor(self.profiles, it),
            host_wakeups=self.host_wakeups.model_dump() if self.host_wakeups else None,
            unweighted=self.unweighted,
            copies=list(self.copies),
        )


def max_models_loaded(profiles: list[ModelProfile], endpoint: EndpointConfig) -> tuple[list[int], list[tuple[int, int]]]:
    """The reference's step 1 on a simulated instance: load copies one at a time (round-robin
    over the profiles), read GPU memory used after each, and stop once
    (used + used / loaded) / total >= threshold. Returns copies per profile and the trace
    [(models loaded, bytes used)]. A profile whose one copy does not fit the memory budget
    beside the baseline counts 0 and the others go on without it (see ``too_large``)."""
    catalog = load_catalog()
    itype = endpoint.instance()
    translated = [translate(p, itype) for p in profiles]
    fits = [not too_large(p, endpoint) for p in translated]
    smallest = max(1, min(p.gpu_memory_bytes for p in translated))
    cap = min(10_000, catalog.gpu_of(itype).nvml_total_bytes // smallest + 2)
    probe = Simulation(translated, endpoint.model_copy(update={"instance_count": 1, "memory_threshold": 1.0}),
                       Workload(kind="poisson", rates=[{"end_s": 1, "rate": 0}]), [cap] * len(profiles), warm=False)
    inst, total, threshold = probe.instances[0], probe.gpu.nvml_total_bytes, endpoint.memory_threshold
    per_profile = [[t for t in probe.targets if t.profile is p] for p in probe.profiles]
    counts, trace = [0] * len(profiles), []
    order = [pi for pi in range(len(profiles)) if fits[pi]]
    loaded = 0
    for k in range(cap if order else 0):
        pi = order[k % len(order)]
        if not inst.preload(per_profile[pi][counts[pi]]):
            break
        counts[pi] += 1
        loaded += 1
        trace.append((loaded, inst.used))
        if (inst.used + inst.used / loaded) / total >= threshold:
            break
    return counts, trace


def too_large(profile: ModelProfile, endpoint: EndpointConfig) -> str | None:
    """Why not even one copy of ``profile`` fits an instance of ``endpoint`` (its resident
    bytes and the baseline above the memory budget), or None when it fits."""
    itype = endpoint.instance()
    total = load_catalog().gpu_of(itype).nvml_total_bytes
    budget = memory_budget(total, endpoint.memory_threshold)
    p = translate(profile, itype)
    if p.gpu_memory_bytes + p.baseline_gpu_bytes <= budget:
        return None
    return (f"profile {profile.name} does not fit even alone on {endpoint.instance_type}: one copy "
            f"{p.gpu_memory_bytes / MiB:,.0f} MiB + baseline {p.baseline_gpu_bytes / MiB:,.0f} MiB > budget "
            f"{budget / MiB:,.0f} MiB ({endpoint.memory_threshold:.0%} of {total / MiB:,.0f} MiB): 0 models")


def simulate(profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload,
             copies: list[int] | int | str = "auto", seed: int = 0, warm: bool = True, progress=None,
             server_timing: bool = False) -> Run:
    """Predict one run: ``copies`` per profile, or "auto" for the reference's max-models count
    (``server_timing``: see Simulation)."""
    check_distinct(profiles)                                   # before the max-models step
    check_seed(seed)
    workload.check_profiles(p.name for p in profiles)
    if workload.kind == "trace":
        read_trace(workload.trace)             # the file now; its names once the copies are known
    mm, trace = max_models_loaded(profiles, endpoint)
    if copies == "auto":
        for p, n in zip(profiles, mm):
            if n == 0:
                raise ConfigError(too_large(p, endpoint) or f"profile {p.name}: no copy fits", field="copies",
                                  value="auto")
        copies = mm
    elif isinstance(copies, int):
        copies = [copies] * len(profiles)
    sim = Simulation(profiles, endpoint, workload, list(copies), seed=seed, warm=warm, server_timing=server_timing)
    run = sim.run(progress=progress)
    run.max_models_loaded = sum(mm)
    run.memory_trace = trace
    return run



