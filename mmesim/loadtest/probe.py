"""What one request costs on this machine, measured with one request in flight at a time:
the load generator's CPU (and the share of it inside the request's own timer), the local
Triton server process's CPU (HTTP handling, decoding) and its model stubs' CPU (the
execution); and the load generator at more than one pace (``measure_client``: a request's
CPU by how long the client's process idled before it, and its CPU per second). A prediction
for instance type ``local`` takes the client's figures for its generator block, and may take
the server's instead of a profile's (``retimed``)."""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mmesim.errors import MmesimError
from mmesim.loadtest.runner import run_loadtest
from mmesim.profile import ModelProfile
from mmesim.workload import LoadGenerator, Workload


@dataclass
class ClientReading:
    """One load test's client process: its requests, CPU, wall time and CPU inside request
    timers, and its median idle before a request (since it last sent one or got an answer)."""
    requests: int
    cpu_s: float
    wall_s: float
    timed_cpu_s: float
    idle_s: float | None
    wait_excess_s: float = 0.0   # one user's mean time from an answer to its next request beyond its wait

    @classmethod
    def read(cls, out: Path, records, workload: Workload) -> "ClientReading":
        """From a load test's folder (one Locust process: the probes'), its records and workload."""
        senders = [json.loads(p.read_text()) for p in Path(out).glob("process-*.json")]
        return cls(requests=sum(s["requests"] for s in senders), cpu_s=sum(s["cpu_s"] for s in senders),
                   wall_s=max((s["wall_s"] for s in senders), default=0.0),
                   timed_cpu_s=sum(s["timed_cpu_s"] for s in senders), idle_s=process_idle_s(records),
                   wait_excess_s=wait_slack(records, workload, 0.0))

    def slack_s(self, untimed_cpu_s: float) -> float:
        """The client timer's slack: the user's time from answer to next request beyond its
        wait, less the CPU after the answer (``wait_slack``, read once)."""
        return max(0.0, self.wait_excess_s - untimed_cpu_s)


@dataclass
class RequestCost:
    requests: int
    client_cpu_s: float          # the load generator's CPU per request
    client_timed_share: float    # of which inside the request's timer
    server_cpu_s: float          # tritonserver's front end per request (its own process, less the models' threads)
    stub_cpu_s: float            # the model's Python-backend stubs per request (one execution each)
    handoff_s: float             # Triton's compute wall per execution beyond the stubs' CPU (0: not read)
    client_wait_slack_s: float   # a user's time from answer to next request beyond its wait and untimed CPU
    others_cores: float          # cores other processes kept busy meanwhile (Locust's start-up among them)
    stub_warmth: float = 1.0     # the profile's host_warmth factor over the probe's executions, on average
    curve_handoff_s: float | None = None   # the profile's hand-off by idle, the same way (None: not split)
    model_thread_s: float = 0.0  # tritonserver's CPU per request on the models' threads (calibrate's models_since_s)
    # the profile's front end and model threads by idle over the probe's requests (None: not by idle)
    curve_frontend_s: float | None = None
    curve_model_thread_s: float | None = None
    # the probe's median pause before an execution: since its copy's previous request, and
    # since any request (the front end's); where the probe stands on the warmth curves
    idle_s: float | None = None
    server_idle_s: float | None = None
    client: ClientReading | None = None   # the client process's own figures (measure_client's points)

    def generator(self, on_host: bool = True) -> LoadGenerator:
        """The measured client as a Workload's generator (one Locust process), at this
        probe's pace whatever the workload's; ``measure_client`` gives it by pace."""
        return LoadGenerator(workers=1, cpu_s_per_request=self.client_cpu_s, timed_share=self.client_timed_share,
                             wait_slack_s=self.client_wait_slack_s, on_host=on_host)

    def execution_ratio(self, profile: ModelProfile) -> float:
        """The probe's executions against ``profile``'s at the probe's own pauses (its
        host_warmth applied): above 1 this host runs slower now than when it was calibrated,
        below 1 faster. A host that drifts moves every prediction made from the profile by as
        much (this VM: 10-20 % within minutes)."""
        return self.stub_cpu_s / (profile.service[0].seconds * self.stub_warmth)

    def to_dict(self) -> dict:
        return asdict(self)


def probe_workload(seconds: float = 10.0) -> Workload:
    """One user, short waits: one request in flight, so a timer holds that request's CPU only."""
    return Workload(name="probe", kind="users", stages=[{"end_s": seconds, "users": 1, "spawn_rate": 1}],
                    wait_s=(0.0, 0.01))


def measure_request_cost(url: str, server_pid: int, profile: ModelProfile, copies: int, out: Path,
                         client: str = "http", seconds: float = 10.0, workload: Workload | None = None,
                         stats_url: str | None = None) -> RequestCost:
    """Load-test the local Triton at ``url`` (SageMaker port, ``copies`` of ``profile``'s
    model loaded) with one user (or ``workload``) and split the CPU it used per request. With
    more than one request in flight, the client's timed share counts other requests' CPU too.
    ``stats_url``: Triton's HTTP endpoint, to read its compute time per execution for the
    hand-off (mmesim.calibrate.handoff)."""
    from mmesim.calibrate.latency import models_since_s
    from mmesim.process import machine_busy_s, thread_cpu_split_s, tree_cpu_s

    from mmesim.triton.client import kserve_client
    kserve = kserve_client(stats_url) if stats_url else None
    before = _timings(kserve) if kserve else {}
    since = models_since_s(server_pid)
    srv0, tree0 = thread_cpu_split_s(server_pid, since), tree_cpu_s(server_pid) or 0.0
    busy0, t0 = machine_busy_s(), time.monotonic()
    workload = workload or probe_workload(seconds)
    run = run_loadtest(url, None, workload, [profile], [copies], out, protocol="triton", client=client)
    front, models = (b - a for a, b in zip(srv0, thread_cpu_split_s(server_pid, since)))
    srv, tree = front + models, (tree_cpu_s(server_pid) or 0.0) - tree0
    busy = machine_busy_s() - busy0
    wall = time.monotonic() - t0
    handoff = 0.0
    if kserve:
        after = _timings(kserve)
        kserve.close()
        deltas = [t - before[name] for name, t in after.items() if name in before]
        handoff = max(0.0, (sum(d.compute_s for d in deltas) - (tree - srv)) / max(1, sum(d.executions for d in deltas)))
    reading = ClientReading.read(out, run.records, workload)
    sent_cpu = reading.cpu_s
    n = max(1, len(run.records))
    client_cpu = sent_cpu / n
    timed_share = min(1.0, reading.timed_cpu_s / max(1e-9, sent_cpu))
    return RequestCost(requests=len(run.records), client_cpu_s=client_cpu, client_timed_share=timed_share,
                       server_cpu_s=front / n, model_thread_s=models / n, stub_cpu_s=(tree - srv) / n,
                       handoff_s=handoff,
                       client_wait_slack_s=reading.slack_s(client_cpu * (1 - timed_share)),
                       others_cores=max(0.0, busy - tree - sent_cpu) / max(1e-9, wall),
                       stub_warmth=over_pauses(profile.warmth_factor, run.records) if profile.host_warmth else 1.0,
                       curve_handoff_s=over_pauses(profile.warmth_handoff, run.records)
                       if profile.handoff_by_idle else None,
                       # the front end is the server's: its idle is since any request, not the model's
                       curve_frontend_s=over_pauses(profile.warmth_frontend, run.records, by_model=False)
                       if profile.frontend_by_idle else None,
                       curve_model_thread_s=over_pauses(profile.warmth_model_thread, run.records)
                       if profile.model_thread_by_idle else None,
                       idle_s=median_pause(run.records), server_idle_s=median_pause(run.records, by_model=False),
                       client=reading)


def process_idle_s(records) -> float | None:
    """The client process's median idle before a request: the time since its previous event,
    a request sent or an answer received (records of one process)."""
    events = sorted([(r.start, 0) for r in records] + [(r.end, 1) for r in records])
    gaps, last = [], None
    for when, is_end in events:
        if not is_end and last is not None:
            gaps.append(when - last)
        last = when
    return statistics.median(gaps) if gaps else None


def client_paces(seconds: float = 8.0) -> dict[str, Workload]:
    """The client's paces beyond the probes' (warm: one user, 0-10 ms waits; cold: 0.15-0.35
    s): ``busy``, four users with waits of 0-2 ms, so the process idles about a millisecond
    between events; ``still``, one user pausing 1.5-2.5 s, so its CPU is nearly all the
    process's own work per second."""
    return {"busy": Workload(name="probe-busy", kind="users", stages=[{"end_s": seconds, "users": 4,
                                                                       "spawn_rate": 100}], wait_s=(0.0, 0.002)),
            "still": Workload(name="probe-still", kind="users", stages=[{"end_s": 1.5 * seconds, "users": 1,
                                                                        "spawn_rate": 1}], wait_s=(1.5, 2.5))}


def measure_client(url: str, profile: ModelProfile, copies: int, out: Path, client: str = "http",
                   warm: ClientReading | None = None, cold: ClientReading | None = None, seconds: float = 8.0,
                   on_host: bool = True, protocol: str = "triton", endpoint_name: str | None = None,
                   progress=None) -> LoadGenerator:
    """The load generator as it runs here, by pace: four short load tests on ``copies`` of
    ``profile``'s model, one user after short pauses (``warm``) and long ones (``cold``; both
    may come from measure_request_cost's probes, ``RequestCost.client``), four busy users and
    one user pausing seconds (``client_paces``), made into a generator (``client_generator``).
    ``progress(name)`` is told each probe as it starts."""
    paces = {"warm": probe_workload(seconds), "cold": cold_probe_workload(2 * seconds), **client_paces(seconds)}
    readings = {"warm": warm, "cold": cold}
    for name, workload in paces.items():
        if readings.get(name) is None:
            if progress:
                progress(name)
            run = run_loadtest(url, endpoint_name, workload, [profile], [copies], Path(out) / name,
                               protocol=protocol, client=client)
            readings[name] = ClientReading.read(Path(out) / name, run.records, workload)
            if not readings[name].requests:
                raise MmesimError(f"the client's {name} probe sent no request: see {Path(out) / name / 'locust.log'}")
    return client_generator(readings["warm"], readings["cold"], readings["busy"], readings["still"], on_host)


def client_generator(warm: ClientReading, cold: ClientReading, busy: ClientReading, still: ClientReading,
                     on_host: bool = True) -> LoadGenerator:
    """One Locust process's CPU split into what it spends each second and what a request
    costs at each pace. The two long-pause readings (``cold``, ``still``) are taken to cost
    the same per request (the process is as cold after 0.3 s as after 2 s), which leaves two
    equations for two unknowns: the CPU per second and per request after a long pause. Each
    other reading, less the CPU per second over its wall time, is a request's CPU at its
    median idle. With one request in flight (``warm``, ``cold``) the CPU inside the timers is
    that request's alone: its share there, and a floor, since a request costs at least what
    its timer holds (the cold end's share of its probe's CPU is small, so an error in the
    background moves it most: the still probe's fixed costs, its start and first connection,
    spread over its seconds, read as CPU per second). With four users in flight (``busy``)
    timers overlap: the generator's share holds there. A longer pause never makes a request
    cheaper: a reading below a shorter idle's is taken at that one's figure. The warm
    reading's figures are the reference (``cpu_s_per_request``, ``timed_share``), and its
    user's time from answer to next request beyond its wait and the untimed CPU is the
    timer's slack."""
    det = still.wall_s * cold.requests - cold.wall_s * still.requests
    background = (still.cpu_s * cold.requests - cold.cpu_s * still.requests) / det if det > 0 else 0.0
    background = min(max(background, 0.0), min(r.cpu_s / r.wall_s for r in (cold, still, busy, warm)))

    def per_request(r: ClientReading) -> tuple[float, float]:
        """(CPU per request, of it inside the timer) of a reading."""
        n = max(1, r.requests)
        timed = 0.0 if r is busy else r.timed_cpu_s / n
        return max(1e-6, timed, (r.cpu_s - background * r.wall_s) / n), timed
    points, floor = [], 0.0
    for r in sorted((r for r in (busy, warm, cold) if r.idle_s is not None), key=lambda r: r.idle_s):
        cpu, timed = per_request(r)
        floor = max(floor, cpu)                   # a longer pause never makes a request cheaper
        points.append({"idle_s": max(r.idle_s, 1e-6), "cpu_s_per_request": floor,
                       "timed_share": None if r is busy else min(1.0, timed / floor)})
    cpu, timed = per_request(warm)
    share = min(1.0, timed / cpu)
    return LoadGenerator(workers=1, cpu_s_per_request=cpu, timed_share=share,
                         wait_slack_s=warm.slack_s(cpu * (1 - share)),
                         by_idle=points, background_cpu_s_per_s=background, on_host=on_host)


def pauses(records, by_model: bool = True) -> list[float]:
    """Each execution's pause: the time since its model copy's previous request ended
    (``by_model`` False: any model's)."""
    last, out = {}, []
    for r in sorted(records, key=lambda r: r.start):
        key = r.model if by_model else None
        if key in last:
            out.append(max(0.0, r.start - last[key]))
        last[key] = r.end
    return out


def median_pause(records, by_model: bool = True) -> float | None:
    p = pauses(records, by_model)
    return statistics.median(p) if p else None


def over_pauses(figure, records, by_model: bool = True) -> float:
    """``figure(pause)`` averaged over the executions of ``records``, each at the time since
    its model copy's previous request ended (``by_model`` False: any model's): e.g. the
    profile's ``warmth_factor``, how much colder than back to back the probe's executions ran
    by the profile's own measure."""
    values = [figure(p) for p in pauses(records, by_model)]
    return sum(values) / len(values) if values else figure(0.0)


def wait_slack(records, workload: Workload, untimed_cpu_s: float) -> float:
    """One user's mean time from an answer to its next request, less the mean wait it asked
    for and the client's CPU outside its timer: what the client's timer adds. 0 unless one
    user ran alone (the records do not say which user sent which request)."""
    if max((s.users for s in workload.stages), default=0) != 1:
        return 0.0
    rs = sorted(records, key=lambda r: r.start)
    # a gap 50 ms past the longest wait is a pause (the user's start, a GC), not the timer
    gaps = [g for g in (b.start - a.end for a, b in zip(rs, rs[1:])) if g < workload.wait_s[1] + 0.05]
    if len(gaps) < 20:
        return 0.0
    return max(0.0, sum(gaps) / len(gaps) - sum(workload.wait_s) / 2 - untimed_cpu_s)


def _timings(kserve) -> dict:
    """Triton's statistics of every loaded model, by name."""
    from mmesim.triton.client import model_timings
    return {m["name"]: model_timings(kserve, m["name"]) for m in kserve.get_model_repository_index()
            if m.get("state") == "READY"}


def cold_probe_workload(seconds: float = 16.0) -> Workload:
    """One user pausing 0.15-0.35 s: executions after an idle spell, the warmth curves' cold end."""
    return Workload(name="probe-cold", kind="users", stages=[{"end_s": seconds, "users": 1, "spawn_rate": 1}],
                    wait_s=(0.15, 0.35))


def retimed(profile: ModelProfile, cost: RequestCost, cold: RequestCost | None = None) -> ModelProfile:
    """``profile`` with the CPU costs measured here and now: an execution (batch 1; every
    batch size scaled alike), the server's fixed cost per request beyond decoding the body (and
    its models' threads', apart where the profile holds them apart), and
    the hand-off per execution where it was read. The probe's executions ran as warm as its
    pace let them; the profile's figures are back to back, and the simulator applies
    ``host_warmth`` on top, so the probe's cost is divided by the warmth it ran at; where the
    profile holds the hand-off by idle, its curve is scaled alike to the probe's hand-off, and
    so are the server's front end and model threads by idle.

    ``cold``: a second probe after long pauses (``cold_probe_workload``). A host's drift is
    not the same at every idle (this VM, tiny-bert, 2026-12-06 07:37-07:39 UTC, five pairs of
    probes: executions after 0-10 ms x0.52-0.80 of the profile's, after 150-350 ms
    x0.81-0.98), so each curve point is scaled by the warm probe's ratio up to its median
    pause, by the cold one's from its median pause, and between them linearly in log idle."""
    k = cost.execution_ratio(profile)
    # a profile that holds the models' threads apart gets them apart; an older one, with the rest
    apart = profile.model_thread_s > 0
    server = cost.server_cpu_s + (0.0 if apart else cost.model_thread_s)
    update = {"service": [s.model_copy(update={"seconds": s.seconds * k}) for s in profile.service],
              "request_overhead_s": max(0.0, server - profile.decode_s_per_byte * profile.input_bytes),
              "model_thread_s": cost.model_thread_s if apart else 0.0,
              "handoff_s": cost.handoff_s if cost.handoff_s > 0 else profile.handoff_s}

    def by_idle(read, curve, idle: str = "idle_s"):
        """idle -> what the probe read over what the curve says at its pauses (None: not read);
        the cold probe's ratio where it read one."""
        if not (read(cost) > 0 and curve(cost)):
            return None
        warm = read(cost) / curve(cost)
        far = read(cold) / curve(cold) if cold is not None and read(cold) > 0 and curve(cold) else None
        return _between_probes(warm, far, getattr(cost, idle), cold and getattr(cold, idle))

    # each curve by idle scaled to what the probes read at their own pauses (the front end's
    # factor is then relative to the probe's figure, which the request cost now is)
    scale = {}
    executions = by_idle(lambda c: c.stub_cpu_s, lambda c: profile.service[0].seconds * c.stub_warmth)
    if cold is not None and executions is not None:     # the service takes the warm ratio, the curve the rest
        scale["factor"] = lambda idle: executions(idle) / k
    if profile.handoff_by_idle:
        scale["handoff_s"] = by_idle(lambda c: c.handoff_s, lambda c: c.curve_handoff_s)
    scale["frontend_s"] = by_idle(lambda c: c.server_cpu_s, lambda c: c.curve_frontend_s, "server_idle_s")
    if apart:
        scale["model_thread_s"] = by_idle(lambda c: c.model_thread_s, lambda c: c.curve_model_thread_s)
    scale = {a: f for a, f in scale.items() if f is not None}
    if scale:
        update["host_warmth"] = [w.model_copy(update={a: getattr(w, a) * f(w.idle_s) for a, f in scale.items()})
                                 for w in profile.host_warmth]
    return profile.model_copy(update=update)


def _between_probes(warm: float, cold: float | None, warm_idle: float | None, cold_idle: float | None):
    """idle -> ratio: ``warm`` up to ``warm_idle``, ``cold`` from ``cold_idle``, linear in log
    idle between; ``warm`` at every idle without a cold reading."""
    if cold is None or warm_idle is None or cold_idle is None or cold_idle <= warm_idle:
        return lambda idle: warm
    lo = max(warm_idle, 1e-4)
    span = math.log(cold_idle / lo)

    def ratio(idle: float) -> float:
        if idle <= lo:
            return warm
        if idle >= cold_idle:
            return cold
        return warm + (cold - warm) * math.log(idle / lo) / span
    return ratio


def between(before: ModelProfile, after: ModelProfile) -> ModelProfile:
    """The mean of two retimings of one profile (``retimed`` with the probes right before and
    right after a run): the host's CPU costs around the run, for a VM whose speed drifted
    during it. Not a prediction (the second probe ran after the measurement): what the model
    says given the host's speed while the run went on, which tells the model's error from the
    drift's. Geometric means: the mean speed ratio, and a product (an execution is the
    service figure times the warmth factor) the same mean of the two's products."""
    if [w.idle_s for w in before.host_warmth] != [w.idle_s for w in after.host_warmth]:
        raise ValueError(f"{before.name}: the two retimings hold different warmth curves")

    def mean(a, b):
        return None if a is None or b is None else math.sqrt(a * b)
    fields = ("factor", "handoff_s", "frontend_s", "model_thread_s")
    return before.model_copy(update={
        "service": [s.model_copy(update={"seconds": mean(s.seconds, t.seconds)})
                    for s, t in zip(before.service, after.service)],
        "request_overhead_s": mean(before.request_overhead_s, after.request_overhead_s),
        "model_thread_s": mean(before.model_thread_s, after.model_thread_s),
        "handoff_s": mean(before.handoff_s, after.handoff_s),
        "host_warmth": [w.model_copy(update={f: mean(getattr(w, f), getattr(v, f)) for f in fields})
                        for w, v in zip(before.host_warmth, after.host_warmth)]})
