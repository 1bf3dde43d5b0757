"""Timing a loaded model through the MME invoke path, split with Triton's statistics:

- service: one execution per request at concurrency 1, for each batch size; the statistics
  API gives that execution's compute (input + infer + output) seconds exactly;
- decode: what the round trip costs beyond Triton's own request time (HTTP + JSON parse of
  the request and serialisation of the answer), fitted per payload byte;
- load: closed-loop clients at each concurrency, client-side p50/p95 and throughput;
- overlap: how much two models executing at once slow each other on one device.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from mmesim.triton.client import MMEClient, model_timings
from mmesim.triton.modelspec import ModelSpec


@dataclass
class ServicePoint:
    batch: int
    body_bytes: int
    compute_s: list[float] = field(default_factory=list)     # per execution
    queue_s: list[float] = field(default_factory=list)
    roundtrip_s: list[float] = field(default_factory=list)   # client-side, pre-serialised body
    overhead_s: list[float] = field(default_factory=list)    # round trip minus Triton's request time

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.compute_s)

    @property
    def cv(self) -> float:
        return statistics.pstdev(self.compute_s) / self.mean_s if len(self.compute_s) > 1 and self.mean_s else 0.0


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


def batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to and including max batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max(1, max_batch)]


def measure_service(mme: MMEClient, kserve, name: str, spec: ModelSpec, batches: list[int], repeats: int = 5,
                    warmup: int = 2, seed: int = 0) -> list[ServicePoint]:
    points = []
    for batch in batches:
        body = spec.request_body(batch, seed)
        for _ in range(warmup):
            mme.invoke(name, body)
        point = ServicePoint(batch, len(body))
        for _ in range(repeats):
            before = model_timings(kserve, name)
            resp = mme.invoke(name, body)
            delta = model_timings(kserve, name) - before
            point.roundtrip_s.append(resp.seconds)
            point.compute_s.append(delta.compute_s / max(1, delta.executions))
            point.queue_s.append(delta.queue_s)
            point.overhead_s.append(max(0.0, resp.seconds - delta.success_s))
        points.append(point)
    return points


def decode_cost(points: list[ServicePoint]) -> tuple[float, float]:
    """(seconds per request byte, fixed seconds): least squares of the median overhead of each
    batch size against its body size (medians: one slow round trip must not tilt the line)."""
    xs = [p.body_bytes for p in points if p.overhead_s]
    ys = [statistics.median(p.overhead_s) for p in points if p.overhead_s]
    if len(set(xs)) < 2:
        return (ys[0] / xs[0] if xs and xs[0] else 0.0), 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    slope = max(0.0, slope)
    return slope, max(0.0, my - slope * mx)


def _closed_loop(base_url: str, targets: list[str], body: bytes, concurrency: int, requests: int,
                 min_seconds: float) -> list[float]:
    """``concurrency`` clients per target, each sending back-to-back until both ``requests``
    in total and ``min_seconds`` are reached; returns the latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + min_seconds
    errors: list[BaseException] = []

    def user(target: str):
        client = MMEClient(base_url)
        try:
            while True:
                with lock:
                    if len(latencies) >= requests and time.perf_counter() >= stop_at:
                        return
                resp = client.invoke(target, body)
                with lock:
                    latencies.append(resp.seconds)
        except BaseException as exc:   # surface in the caller
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(t,), daemon=True) for t in targets for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def measure_load(base_url: str, kserve, name: str, spec: ModelSpec, batches: list[int], concurrencies: list[int],
                 requests: int = 12, min_seconds: float = 1.0) -> list[LoadPoint]:
    points = []
    for batch in batches:
        body = spec.request_body(batch)
        for conc in concurrencies:
            before = model_timings(kserve, name)
            start = time.perf_counter()
            lat = _closed_loop(base_url, [name], body, conc, max(requests, 2 * conc), min_seconds)
            elapsed = time.perf_counter() - start
            delta = model_timings(kserve, name) - before
            points.append(LoadPoint(batch, conc, len(lat), _quantile(lat, 0.5), _quantile(lat, 0.95),
                                    len(lat) / elapsed, delta.compute_s / max(1, delta.executions),
                                    sum(b * n for b, (n, _) in delta.by_batch.items()) / max(1, delta.executions)))
    return points


def measure_overlap(base_url: str, kserve, names: list[str], spec: ModelSpec, batch: int,
                    requests: int = 8) -> tuple[float, float, float]:
    """(overlap in [0,1], compute per execution alone, together). With k models running at
    once, perfect overlap leaves each execution's time unchanged; full serialisation
    multiplies it by k. overlap = (k - slowdown) / (k - 1)."""
    body = spec.request_body(batch)
    k = len(names)

    def per_exec(targets):
        before = [model_timings(kserve, n) for n in targets]
        _closed_loop(base_url, targets, body, 1, requests * len(targets), 0.5)
        deltas = [model_timings(kserve, n) - b for n, b in zip(targets, before)]
        return sum(d.compute_s for d in deltas) / max(1, sum(d.executions for d in deltas))

    _closed_loop(base_url, names, body, 1, 2 * k, 0.0)   # warm every copy
    alone = per_exec(names[:1])
    together = per_exec(names)
    slowdown = together / alone if alone > 0 else 1.0
    return min(1.0, max(0.0, (k - slowdown) / (k - 1))), alone, together
