"""Timing a loaded model through the MME invoke path, split with Triton's statistics:

- service: one execution per request at concurrency 1, for each batch size, with bodies in
  Triton's binary tensor format (building and parsing 95 MB of JSON is not what is being
  timed); the statistics API gives each execution's compute seconds, and on a CPU the
  Python-backend stub's own CPU seconds give its work without what neighbours took;
- request cost: what the server's own process spends per request beyond executing it
  (HTTP handling, parsing the body, building the answer), with KServe v2 JSON bodies of a
  few sizes, as CPU time of the tritonserver process (or, where that cannot be read, the
  round trip minus Triton's request time), fitted as fixed seconds + seconds per byte;
- load: closed-loop clients at each concurrency, client-side p50/p95 and throughput;
- scaling: total throughput of k = 1, 2, 4, 8 copies executing at once, relative to one;
- first executions: Triton's compute time of a freshly loaded copy's first batch-1 requests;
- warmth (CPU): Triton's compute time per request with requests paced at a few gaps (and the
  host's utilisation meanwhile): a model that idles between requests runs cold (its memory
  leaves the caches, its stub sleeps; on a VM an idle vCPU's physical core goes to others).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from mmesim.process import machine_busy_s, started_s, thread_cpu_split_s, thread_times
from mmesim.profile import Warmth
from mmesim.triton.client import MMEClient, model_timings
from mmesim.triton.modelspec import JSON_TYPE, ModelSpec


def process_cpu_s(pid: int) -> float:
    """CPU seconds all threads of process ``pid`` have run (nanosecond scheduler counters)."""
    return thread_times(pid)[0]


def stub_pid(server_pid: int, model: str) -> int | None:
    """The Python-backend stub process serving ``model``'s first instance, if there is one."""
    import psutil
    try:
        for child in psutil.Process(server_pid).children(recursive=True):
            if f"{model}_0_0" in child.cmdline():
                return child.pid
    except (psutil.Error, OSError):
        pass
    return None


def models_since_s(server_pid: int) -> float | None:
    """When the server's first Python-backend model began to load, as its oldest stub process
    shows (seconds since boot, less half a second): tritonserver's threads started since are
    its models' (instance threads, schedulers; tiny-bert's from the same tick as its stub to
    1.2 s later), the rest its front end's (started with the server, seconds before any model).
    None without a stub: no split."""
    import psutil
    try:
        starts = [started_s(c.pid) for c in psutil.Process(server_pid).children(recursive=True)]
    except (psutil.Error, OSError):
        return None
    starts = [t for t in starts if t is not None]
    return min(starts) - 0.5 if starts else None


@dataclass
class ServicePoint:
    batch: int
    body_bytes: int                                          # binary tensor body
    compute_s: list[float] = field(default_factory=list)     # per execution, Triton's wall clock
    cpu_s: list[float] = field(default_factory=list)         # per execution, the stub process's CPU (CPU device)
    queue_s: list[float] = field(default_factory=list)
    roundtrip_s: list[float] = field(default_factory=list)   # client-side, pre-serialised body
    overhead_s: list[float] = field(default_factory=list)    # round trip minus Triton's request time
    warmup_s: list[float] = field(default_factory=list)      # the warm-ups before, as ``samples`` measures

    @property
    def wall_s(self) -> float:
        return statistics.fmean(self.compute_s)

    @property
    def samples(self) -> list[float]:
        """What the profile takes: the stub's CPU seconds where measured (one thread: its
        time alone on a free core), else Triton's compute seconds."""
        return self.cpu_s or self.compute_s

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def cv(self) -> float:
        s = self.samples
        return statistics.pstdev(s) / self.mean_s if len(s) > 1 and self.mean_s else 0.0


@dataclass
class RequestPoint:
    """The server's cost per request at one JSON body size."""

    batch: int
    body_bytes: int
    server_cpu_s: list[float] = field(default_factory=list)  # tritonserver's front end's CPU per request, less idle
    overhead_s: list[float] = field(default_factory=list)    # round trip minus Triton's request time
    model_cpu_s: list[float] = field(default_factory=list)   # tritonserver's CPU on the model's threads, per request


@dataclass
class LoadPoint:
    batch: int
    concurrency: int
    requests: int
    p50_s: float
    p95_s: float
    throughput_rps: float           # requests per second (each carries ``batch`` samples)
    compute_per_exec_s: float
    mean_exec_batch: float          # what the dynamic batcher made of it


@dataclass
class ScalingPoint:
    concurrent: int                 # copies executing at once
    per_exec_s: float               # Triton's compute seconds per execution
    throughput: float               # concurrent x alone / per_exec: total relative to one copy alone


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to and including max batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max(1, max_batch)]


def _timings_after(kserve, name: str, before, executions: int = 1, timeout_s: float = 2.0):
    """Triton's statistics once they count ``executions`` more than ``before``: Triton may
    record an execution just after its answer has left, so read again until it shows."""
    deadline = time.perf_counter() + timeout_s
    while True:
        now = model_timings(kserve, name)
        if now.executions - before.executions >= executions or time.perf_counter() >= deadline:
            return now
        time.sleep(0.002)


def _delta_after(kserve, name: str, before, executions: int = 1, timeout_s: float = 2.0):
    """Triton's statistics since ``before``, once they count ``executions`` more."""
    return _timings_after(kserve, name, before, executions, timeout_s) - before


FIRST_EXECUTIONS = 8


def measure_first_executions(mme: MMEClient, kserve, name: str, spec: ModelSpec,
                             count: int = FIRST_EXECUTIONS) -> list[float]:
    """Triton's compute seconds of each of a freshly loaded copy's first ``count`` batch-1
    executions, one at a time: a backend initialises lazily on its first requests (tiny-bert's
    Python-backend stub took about 45 ms on its first, 5 ms on its next four, then its steady
    1.5-2 ms)."""
    body, ctype = spec.binary_body(1)
    point = ServicePoint(1, len(body))
    for _ in range(count):
        _time_one(mme, kserve, name, body, ctype, None, point)
    return point.compute_s


def first_extra_s(first: list[float], steady_s: float, margin: float = 0.2) -> list[float]:
    """What a fresh copy's first executions take beyond ``steady_s``, up to the last one that
    took more than ``margin`` longer (later ones are the steady time's own spread)."""
    extra = [max(0.0, s - steady_s) for s in first]
    slow = [i for i, e in enumerate(extra) if e > margin * steady_s]
    return [round(e, 6) for e in extra[:slow[-1] + 1]] if slow else []


SPREAD_REPEATS = 20
STEADY_WINDOW, STEADY_MARGIN = 5, 0.05     # warm once 5 executions' median stops falling by 5 %
WARMUP_MIN, WARMUP_MAX, WARMUP_MAX_S = 3, 60, 2.0


def steady(samples: list[float], window: int = STEADY_WINDOW, margin: float = STEADY_MARGIN) -> bool:
    """Whether executions have stopped getting faster: the median of the last ``window`` is no
    more than ``margin`` below the median of the ``window`` before. After an idle spell a
    model runs cold for several executions, not one (tiny-bert's stub after 15 s idle, CPU ms:
    13.4, 2.4, 2.0, 2.6, 1.6, 1.8, 1.4, 1.3, then 1.2-1.3), so a fixed two warm-ups left the
    timed executions half warm: 1.2-1.9 ms against 1.1-1.3 steady, minute to minute."""
    if len(samples) < 2 * window:
        return False
    return statistics.median(samples[-window:]) >= (1 - margin) * statistics.median(samples[-2 * window:-window])


def measure_service(mme: MMEClient, kserve, name: str, spec: ModelSpec, batches: list[int], repeats: int = 5,
                    seed: int = 0, stop_after_s: float | None = None, stub: int | None = None,
                    warmup_max_s: float = WARMUP_MAX_S) -> list[ServicePoint]:
    """Executions at each batch size, smallest first: warm-ups until the model runs steady
    (``steady``; at least WARMUP_MIN, at most WARMUP_MAX or ``warmup_max_s`` of executing),
    then ``repeats`` timed ones; once one batch size's execution takes more than
    ``stop_after_s``, larger ones are not timed (the profile extrapolates). ``stub``: the pid
    of the model's Python-backend process, to read its CPU seconds; then batch 1 is timed
    SPREAD_REPEATS times at least, since its spread is also host_warmth's at short pauses."""
    points = []
    for batch in batches:
        body, ctype = spec.binary_body(batch, seed)
        warm = ServicePoint(batch, len(body))
        began = time.perf_counter()
        while len(warm.compute_s) < WARMUP_MAX and not (
                len(warm.compute_s) >= WARMUP_MIN
                and (steady(warm.samples) or time.perf_counter() - began >= warmup_max_s)):
            _time_one(mme, kserve, name, body, ctype, stub, warm)
        point = ServicePoint(batch, len(body), warmup_s=warm.samples)
        for _ in range(max(repeats, SPREAD_REPEATS) if stub and batch == 1 else repeats):
            _time_one(mme, kserve, name, body, ctype, stub, point)
        points.append(point)
        if stop_after_s is not None and point.wall_s > stop_after_s:
            break
    return points


def _time_one(mme: MMEClient, kserve, name: str, body: bytes, ctype: str, stub: int | None,
              point: ServicePoint) -> None:
    """One execution, its figures appended to ``point``."""
    before = model_timings(kserve, name)
    cpu0 = process_cpu_s(stub) if stub else 0.0
    resp = mme.invoke(name, body, ctype)
    cpu1 = process_cpu_s(stub) if stub else 0.0
    delta = _delta_after(kserve, name, before)
    point.roundtrip_s.append(resp.seconds)
    point.compute_s.append(delta.compute_s / max(1, delta.executions))
    if stub:
        point.cpu_s.append((cpu1 - cpu0) / max(1, delta.executions))
    point.queue_s.append(delta.queue_s)
    point.overhead_s.append(max(0.0, resp.seconds - delta.success_s))


def measure_requests(mme: MMEClient, kserve, name: str, spec: ModelSpec, batches: list[int],
                     server_pid: int | None, requests: int = 8) -> list[RequestPoint]:
    """The server process's CPU per request (and the round trip beyond Triton's request time)
    with KServe v2 JSON bodies of ``batches`` samples: what the reference's clients sent. Its
    front end's (HTTP, parsing, the answer) apart from its model's threads' (``models_since_s``:
    the messages to a Python-backend stub, inside Triton's compute time, which the execution's
    figures already hold: tiny-bert 0.30 and 0.31 ms)."""
    idle_rate, since = 0.0, None
    if server_pid:
        since = models_since_s(server_pid)
        c0, t0 = thread_cpu_split_s(server_pid, since)[0], time.perf_counter()
        time.sleep(0.5)
        idle_rate = (thread_cpu_split_s(server_pid, since)[0] - c0) / (time.perf_counter() - t0)
    points = []
    for batch in batches:
        body = spec.request_body(batch)
        mme.invoke(name, body, JSON_TYPE)
        point = RequestPoint(batch, len(body))
        for _ in range(requests):
            before = model_timings(kserve, name)
            c0 = thread_cpu_split_s(server_pid, since) if server_pid else (0.0, 0.0)
            resp = mme.invoke(name, body, JSON_TYPE)
            if server_pid:
                c1 = thread_cpu_split_s(server_pid, since)
                point.server_cpu_s.append(max(0.0, c1[0] - c0[0] - idle_rate * resp.seconds))
                point.model_cpu_s.append(c1[1] - c0[1])
            delta = _delta_after(kserve, name, before)
            point.overhead_s.append(max(0.0, resp.seconds - delta.success_s))
        points.append(point)
    return points


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope >= 0, intercept >= 0) by least squares (one point: all of it per unit)."""
    if len(set(xs)) < 2:
        return (ys[0] / xs[0] if xs and xs[0] else 0.0), 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx)
    return slope, max(0.0, my - slope * mx)


def request_cost(points: list[RequestPoint]) -> tuple[float, float, str]:
    """(seconds per body byte, fixed seconds per request, how): medians per size (one slow
    request must not tilt the line), server CPU where it was read, else the round trip."""
    cpu = all(p.server_cpu_s for p in points)
    xs = [p.body_bytes for p in points]
    ys = [statistics.median(p.server_cpu_s if cpu else p.overhead_s) for p in points]
    slope, fixed = fit_line(xs, ys)
    return slope, fixed, ("server process CPU" if cpu else "round trip minus Triton's request time")


def decode_cost(points: list[ServicePoint]) -> tuple[float, float]:
    """(seconds per request byte, fixed seconds) from round trips beyond Triton's request time."""
    pts = [p for p in points if p.overhead_s]
    return fit_line([p.body_bytes for p in pts], [statistics.median(p.overhead_s) for p in pts])


def _closed_loop(base_url: str, targets: list[str], body: bytes, content_type: str, concurrency: int,
                 requests: int, min_seconds: float) -> list[float]:
    """``concurrency`` clients per target, each sending back-to-back until both ``requests``
    in total and ``min_seconds`` are reached; returns the latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + min_seconds

    def user(target: str):
        client = MMEClient(base_url)
        try:
            while True:
                with lock:
                    if len(latencies) >= requests and time.perf_counter() >= stop_at:
                        return
                resp = client.invoke(target, body, content_type)
                with lock:
                    latencies.append(resp.seconds)
        finally:
            client.close()

    in_threads(user, [t for t in targets for _ in range(concurrency)])
    return latencies


def in_threads(work, args: list) -> None:
    """``work(a)`` for every ``a`` at once, one thread each; the first error is raised here,
    in the caller, once all have ended."""
    errors: list[BaseException] = []

    def run(a) -> None:
        try:
            work(a)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def measure_load(base_url: str, kserve, name: str, spec: ModelSpec, batches: list[int], concurrencies: list[int],
                 requests: int = 12, min_seconds: float = 1.0) -> list[LoadPoint]:
    """Closed-loop clients sending binary bodies of ``batch`` samples, at each concurrency."""
    points = []
    for batch in batches:
        body, ctype = spec.binary_body(batch)
        for conc in concurrencies:
            before = model_timings(kserve, name)
            start = time.perf_counter()
            lat = _closed_loop(base_url, [name], body, ctype, conc, max(requests, 2 * conc), min_seconds)
            elapsed = time.perf_counter() - start
            delta = model_timings(kserve, name) - before
            points.append(LoadPoint(batch, conc, len(lat), _quantile(lat, 0.5), _quantile(lat, 0.95),
                                    len(lat) / elapsed, delta.compute_s / max(1, delta.executions),
                                    sum(b * n for b, (n, _) in delta.by_batch.items()) / max(1, delta.executions)))
    return points


def measure_scaling(base_url: str, kserve, names: list[str], spec: ModelSpec, batch: int, ks: list[int],
                    requests: int = 6, min_seconds: float = 0.5) -> list[ScalingPoint]:
    """For each k in ``ks``: one closed-loop client on each of k copies, so k executions run
    at once; Triton's compute per execution against one copy alone gives the total
    throughput relative to one, k x alone / together (k if they do not slow each other,
    1 if they take turns, flat once the device is saturated)."""
    body, ctype = spec.binary_body(batch)
    _closed_loop(base_url, names[:max(ks)], body, ctype, 1, max(ks), 0.0)   # warm every copy
    points: list[ScalingPoint] = []
    alone = None
    for k in sorted(set(ks)):
        targets = names[:k]
        before = [model_timings(kserve, n) for n in targets]
        _closed_loop(base_url, targets, body, ctype, 1, requests * k, min_seconds)
        deltas = [model_timings(kserve, n) - b for n, b in zip(targets, before)]
        per_exec = sum(d.compute_s for d in deltas) / max(1, sum(d.executions for d in deltas))
        if alone is None:
            alone = per_exec
        points.append(ScalingPoint(k, per_exec, k * alone / per_exec if per_exec > 0 else float(k)))
    return points


# up to 1 s: a small model keeps getting colder past 250 ms of idle (tiny-bert here, one copy:
# 2.7-2.9 ms of Triton compute after 250 ms, 2.8-3.9 after 1 s, 3.3-4.2 after 2 s; three runs,
# 2026-12-05), and closed-loop users with waits of a few hundred ms spread over several copies
# leave each copy idle that long; beyond the last gap the simulator holds its factor. And every
# 2 ms up to 10: the curve bends there, and short requests over a few busy copies idle each copy
# 4-8 ms; between 2 and 10 ms a straight line overstated the cost in the middle (tiny-bert on the
# AMD EPYC, 2026-12-07: x1.11, 1.14, 1.23, 1.33, 1.99 after 2, 4, 6, 8, 10 ms, and x1.00, 1.22,
# 1.23, 1.36, 1.54 in a second calibration, where the line gives x1.55 and x1.27 at 6 ms)
WARMTH_GAPS_S = (0.0, 0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.25, 1.0)


# pauses long enough to read Triton's statistics inside them (over HTTP: about a millisecond)
# and still leave the model idle that long
EACH_MIN_GAP_S = 0.01


@dataclass
class WarmthPoint:
    gap_s: float                 # the pause before each request
    requests: int
    compute_s: float             # Triton's compute time per execution (its statistics), wall clock
    cpu_s: float                 # Triton's CPU per request: the server process and the model's stub
    utilization: float           # busy share of the host's cores meanwhile (everything: the client too)
    stub_cpu_s: float | None = None   # the model's stub alone, per request, less what it spends idle
    queue_s: float = 0.0         # Triton's queue time per request (nothing else queued: its thread waking)
    stub_cpu_each_s: list[float] = field(default_factory=list)  # each execution's
    # each execution's Triton compute wall minus the stub's CPU, where the pause left time to read it
    handoff_each_s: list[float] = field(default_factory=list)
    frontend_s: float | None = None      # the server's front end's CPU per request (its statistics reads left out)
    model_thread_s: float | None = None  # the server's CPU on the model's threads per request


def measure_warmth(mme: MMEClient, kserve, name: str, spec: ModelSpec, server_pid: int, stub: int,
                   gaps=WARMTH_GAPS_S, seconds: float = 2.0) -> list[WarmthPoint]:
    """Batch-1 requests one at a time, each after a pause of ``gap`` s, for ``seconds`` per gap
    (8 requests at least): Triton's compute and queue time per execution, the CPU Triton's
    server and the model's stub spend per request, and how busy the host's cores were. The
    requests are KServe v2 JSON, as the request cost's, so that the server's CPU by thread
    (``thread_cpu_split_s``: its front end apart from the model's threads, read before and
    after each pause's requests) says how its handling cools with the idle before it.

    The stub's CPU is read after each execution, in the pause that follows (a /proc read,
    about 0.1 ms: the time reading takes is part of the pause), so each execution's is known:
    in pauses of EACH_MIN_GAP_S and more also just before it, which leaves out what the stub
    spends idle (about 0.4 ms a second for tiny-bert's), and Triton's statistics after it,
    which give each execution's hand-off. Shorter pauses have no time for the statistics."""
    import os
    body, ctype = spec.request_body(1), JSON_TYPE
    cores = os.cpu_count() or 1
    since = models_since_s(server_pid)
    points = []
    for gap in gaps:
        each = gap >= EACH_MIN_GAP_S
        mme.invoke(name, body, ctype)                      # after the previous gap's last pause
        answered = time.perf_counter()
        before = last = model_timings(kserve, name)
        split0, busy0, t0 = thread_cpu_split_s(server_pid, since), machine_busy_s(), time.perf_counter()
        point = WarmthPoint(gap, 0, 0.0, 0.0, 0.0)
        reads, c1 = 0.0, process_cpu_s(stub)               # reads: the server's CPU answering the statistics reads
        while point.requests < 8 or time.perf_counter() - t0 < seconds:
            if gap:
                time.sleep(max(0.0, gap - (time.perf_counter() - answered)))
            c0 = process_cpu_s(stub) if each else c1
            mme.invoke(name, body, ctype)
            answered = time.perf_counter()
            c1 = process_cpu_s(stub)
            point.requests += 1
            point.stub_cpu_each_s.append(c1 - c0)
            if each:
                r0 = process_cpu_s(server_pid)
                now = _timings_after(kserve, name, last)
                reads += process_cpu_s(server_pid) - r0
                delta, last = now - last, now
                point.handoff_each_s.append(max(0.0, delta.compute_s / max(1, delta.executions) - (c1 - c0)))
        n, wall = point.requests, time.perf_counter() - t0
        split1, busy = thread_cpu_split_s(server_pid, since), machine_busy_s() - busy0
        front, models = split1[0] - split0[0] - reads, split1[1] - split0[1]
        point.frontend_s, point.model_thread_s = max(0.0, front) / n, models / n
        point.stub_cpu_s = statistics.fmean(point.stub_cpu_each_s)
        cpu = front + models + point.stub_cpu_s * n
        delta = _delta_after(kserve, name, before, executions=n)
        point.compute_s = delta.compute_s / max(1, delta.executions)
        point.queue_s = delta.queue_s / max(1, delta.requests)
        point.cpu_s, point.utilization = cpu / n, min(1.0, max(0.0, busy / (cores * wall)))
        points.append(point)
    return points


def warmth_curve(points: list[WarmthPoint], reference: ServicePoint | None) -> list[Warmth]:
    """What a profile's host_warmth holds, by gap (the seconds the model idled before each
    request), relative to ``reference``, the service measurement's batch 1 (None: no curve).

    Where the stub's CPU was read (``reference.cpu_s`` and each point's ``stub_cpu_s``) the
    two parts apart: the stub's CPU relative to the reference's, and the rest of Triton's
    compute wall, the hand-off to and from the stub (tiny-bert: 0.12 ms back to back,
    0.30-0.42 after 50-1000 ms idle: its threads and the server's slept). The simulator gives
    the first to the cores and holds the instance for the second, which uses none. Without:
    Triton's compute wall relative to the reference's, and no hand-off (after an idle spell a
    request also waits for its threads' cores to wake; on a VM, a halted vCPU). Either way
    Triton's queue time per request, as ``wakeup_s``: one request at a time nothing else is
    queued, so it is Triton's instance thread waking (tiny-bert: 0.10 ms back to back,
    0.19-0.38 ms after 10-1000 ms idle).

    Where the server's CPU was read by thread, its front end's and its model threads' per
    request after each pause (``frontend_s``, ``model_thread_s``: tiny-bert's front end 0.13 ms
    back to back, 0.3 after 10 ms, 0.5-0.9 after 50-250 ms; the simulator scales a request's
    handling by it, keyed on the server's idle time).

    Where each execution was read, each part's spread too (``tail_cv``). Pauses long enough
    to read Triton's statistics (EACH_MIN_GAP_S) share one: the spread relative to each
    pause's mean is the same from 10 ms to 1 s (the stubs' log of a cores-ramp: interquartile
    0.09-0.12 of the CPU, 0.15-0.20 of the hand-off, at every pause), so the 8 executions of
    a long pause are pooled with the 150 of a short one rather than read alone. A shorter
    pause has its own hundreds for the stub's CPU and no room for the statistics: its
    hand-off's spread is the reference's (one at a time, a statistics read apart)."""
    pts = sorted((p for p in points if p.compute_s > 0), key=lambda p: p.gap_s)
    if reference is None or reference.wall_s <= 0 or not pts:
        return []
    if not (reference.cpu_s and all(p.stub_cpu_s for p in pts)):
        return [Warmth(idle_s=p.gap_s, factor=round(p.compute_s / reference.wall_s, 3), wakeup_s=round(p.queue_s, 6),
                       **_server_by_idle(p, pts)) for p in pts]
    spread = {}
    cold = [p for p in pts if p.handoff_each_s]
    if cold:
        pooled = (tail_cv(_relative([p.stub_cpu_each_s for p in cold])),
                  tail_cv(_relative([p.handoff_each_s for p in cold])))
        handoff = tail_cv([max(0.0, w - c) for w, c in zip(reference.compute_s, reference.cpu_s)])
        spread = {p.gap_s: pooled if p.handoff_each_s else (tail_cv(p.stub_cpu_each_s or reference.cpu_s), handoff)
                  for p in pts}
    return [Warmth(idle_s=p.gap_s, factor=round(p.stub_cpu_s / reference.mean_s, 3),
                   handoff_s=round(max(0.0, p.compute_s - p.stub_cpu_s), 6), wakeup_s=round(p.queue_s, 6),
                   cv=spread[p.gap_s][0] if spread else None, handoff_cv=spread[p.gap_s][1] if spread else None,
                   **_server_by_idle(p, pts))
            for p in pts]


def _server_by_idle(point: WarmthPoint, points: list[WarmthPoint]) -> dict:
    """The server's own CPU per request after ``point``'s pause, by thread (front end, the
    model's threads), where every point has it (a profile holds it at every idle or none)."""
    if any(p.frontend_s is None or p.model_thread_s is None for p in points):
        return {}
    return {"frontend_s": round(point.frontend_s, 6), "model_thread_s": round(point.model_thread_s, 6)}


def _relative(groups: list[list[float]]) -> list[float]:
    """Each group's values over its own mean, pooled."""
    out = []
    for g in groups:
        m = statistics.fmean(g) if g else 0.0
        out += [x / m for x in g] if m > 0 else []
    return out


Z95 = 1.6449     # the standard normal's 95th percentile


def tail_cv(samples: list[float]) -> float:
    """The coefficient of variation of a gamma with the samples' mean and 95th percentile,
    which is what the simulator draws from (its quantiles by Wilson and Hilferty's cube-root
    approximation, close for cv up to 1; capped there). Not the standard deviation: a few
    far outliers would set it (the hand-off after 10-1000 ms idle in a cores-ramp's log:
    0.52-0.57 by the standard deviation, whose gamma's 95th percentile is 2.2-2.3 times the
    median; measured 1.65-1.77)."""
    if len(samples) < 2:
        return 0.0
    mean = statistics.fmean(samples)
    if mean <= 0:
        return 0.0
    y = (statistics.quantiles(samples, n=20, method="inclusive")[-1] / mean) ** (1 / 3)
    if y <= 1:
        return 0.0
    # q95 / mean = (1 - cv^2 / 9 + Z95 cv / 3)^3, solved for the smaller root
    a, b = 1 / 9, Z95 / 3
    disc = b * b - 4 * a * (y - 1)
    return 1.0 if disc < 0 else round(min(1.0, (b - disc ** 0.5) / (2 * a)), 4)
