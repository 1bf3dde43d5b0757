"""CloudWatch-named metric series for a Run, at 60 s periods, with CloudWatch's statistics.

Predictions and the emulator report what SageMaker would put in CloudWatch under the same
names, so a dashboard built for a real MME reads a prediction. Semantics, per metric:

===================== ============ ============================================================
metric                unit         samples (a datapoint's statistic is taken over these)
===================== ============ ============================================================
Invocations           None         1 per request, stamped at its end           (Sum)
InvocationsPerInstance None        1/instance_count per request                (Sum)
Invocation4XXErrors   None         1 if 429/400/424 (incl. InvocationTimeout), else 0 (Sum, Average = rate)
Invocation5XXErrors   None         1 if 503/500/507 (memory or disk), else 0   (Sum, Average = rate)
ModelCacheHit         None         1 if the model was loaded already, else 0, per request that
                                   reached an instance                         (Sum, Average = hit ratio)
ModelLatency          Microseconds end - start (minus overhead_s if given) of each ok request (Average)
OverheadLatency       Microseconds overhead_s of each ok request, only when given   (Average)
ModelLoadingWaitTime  Microseconds per cold request: from its start until its model's load on
                                   its instance completed (or the request ended)  (Average)
ModelDownloadingTime  Microseconds seconds of each "download" event: S3 first byte, transfer
                                   (sharing the network) and untar            (Average)
ModelLoadingTime      Microseconds seconds of each "load" event: from the load call (memory
                                   free) to loaded, waiting for a load thread included (Average)
ModelUnloadingTime    Microseconds seconds of each "unload" event               (Average)
LoadedModelCount      None         per instance, models loaded at the period's end (Sum = endpoint,
                                   Average = per instance)
GPUMemoryUtilization  Percent      per instance, used/total*100 sampled each whole second (Average, Maximum)
GPUUtilization        Percent      per instance and second, GPU busy share*100 (Average, Maximum)
CPUUtilization        Percent      per instance and second, host CPU busy summed over cores*100
                                   (so up to vCPUs*100, as SageMaker reports it) (Average, Maximum)
===================== ============ ============================================================

A datapoint is stamped with the period in which the thing it measures finished (a request's
end, an event's ``time + seconds``: ``ModelEvent.time`` is taken as when the move began). As in
CloudWatch, a period without samples has no datapoint. GPUUtilization and CPUUtilization
appear only when the run carries per-second busy data (``Run.utilization``).
ModelLatency comes from the records' client-side times, so it includes SageMaker's overhead and
client time unless ``overhead_s`` separates them: read it as an upper bound.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmesim.errors import ConfigError
from mmesim.results.records import (DISK_FULL, EXECUTION_OOM, INTERNAL, MODEL_ERROR, MODEL_NOT_READY, OK,
                                    OUT_OF_MEMORY, OUTCOMES, OVERLOADED, TIMEOUT, VALIDATION, ModelEvent, Run)

PERIOD_S = 60
ERRORS_4XX = frozenset({MODEL_NOT_READY, VALIDATION, MODEL_ERROR, TIMEOUT, EXECUTION_OOM})
ERRORS_5XX = frozenset({OVERLOADED, INTERNAL, OUT_OF_MEMORY, DISK_FULL})

_LATENCY_STATS = ("Average", "Minimum", "Maximum", "Sum", "SampleCount")
# name: (statistic a series shows, unit, statistics written to CSV)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "Invocations": ("Sum", "None", ("Sum",)),
    "InvocationsPerInstance": ("Sum", "None", ("Sum",)),
    "Invocation4XXErrors": ("Sum", "None", ("Sum", "Average")),
    "Invocation5XXErrors": ("Sum", "None", ("Sum", "Average")),
    "ModelCacheHit": ("Sum", "None", ("Sum", "Average", "SampleCount")),
    "ModelLatency": ("Average", "Microseconds", _LATENCY_STATS),
    "OverheadLatency": ("Average", "Microseconds", _LATENCY_STATS),
    "ModelLoadingWaitTime": ("Average", "Microseconds", _LATENCY_STATS),
    "ModelDownloadingTime": ("Average", "Microseconds", _LATENCY_STATS),
    "ModelLoadingTime": ("Average", "Microseconds", _LATENCY_STATS),
    "ModelUnloadingTime": ("Average", "Microseconds", _LATENCY_STATS),
    "LoadedModelCount": ("Sum", "None", ("Sum", "Average", "Minimum", "Maximum")),
    "GPUMemoryUtilization": ("Average", "Percent", ("Average", "Maximum", "Minimum")),
    "GPUUtilization": ("Average", "Percent", ("Average", "Maximum", "Minimum")),
    "CPUUtilization": ("Average", "Percent", ("Average", "Maximum", "Minimum")),
}
_EVENT_METRICS = {"download": "ModelDownloadingTime", "load": "ModelLoadingTime", "unload": "ModelUnloadingTime"}


@dataclass(frozen=True, slots=True)
class Datapoint:
    metric: str
    period_start_s: float
    statistic: str
    value: float
    unit: str


def platform_counts(points: Sequence[Datapoint]) -> dict[str, int]:
    """Cold starts, loads and unloads as an endpoint's datapoints count them (nothing when it
    reported nothing): ModelCacheHit's misses (SampleCount - Sum), ModelLoadingTime's and
    ModelUnloadingTime's SampleCount (no datapoint in a period: none happened)."""
    if not points:
        return {}
    total: dict[tuple[str, str], float] = defaultdict(float)
    for d in points:
        total[d.metric, d.statistic] += d.value
    return {"cold_starts": round(total["ModelCacheHit", "SampleCount"] - total["ModelCacheHit", "Sum"]),
            "loads": round(total["ModelLoadingTime", "SampleCount"]),
            "unloads": round(total["ModelUnloadingTime", "SampleCount"])}


def statistic(samples: Sequence[float], name: str) -> float:
    """CloudWatch's statistic over one period's samples."""
    if name == "Sum":
        return math.fsum(samples)
    if name == "Average":
        return math.fsum(samples) / len(samples)
    if name == "Minimum":
        return min(samples)
    if name == "Maximum":
        return max(samples)
    if name == "SampleCount":
        return float(len(samples))
    raise ValueError(f"unknown statistic {name!r}")


def loaded_models(events: Sequence[ModelEvent]) -> dict[int, list[tuple[float, int]]]:
    """Models loaded on each instance as a step function [(time, count)], changing when a
    load or unload completes."""
    moves = sorted((e.time + e.seconds, e.instance, e.model, e.kind) for e in events
                   if e.kind in ("preload", "load", "unload"))
    loaded: dict[int, set[str]] = defaultdict(set)
    steps: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for t, inst, model, kind in moves:
        (loaded[inst].discard if kind == "unload" else loaded[inst].add)(model)
        steps[inst].append((t, len(loaded[inst])))
    return dict(steps)


def _value_at(steps: list[tuple[float, float]], times: list[float], t: float, before=None):
    i = bisect.bisect_right(times, t)
    return steps[i - 1][1] if i else before


class _Samples:
    """Samples per (metric, period index); per-request samples arrive as arrays."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.data: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, metric: str, t: float, value: float) -> None:
        self.data[metric][max(0, int(t // self.period_s))].append(value)

    def add_many(self, metric: str, t: np.ndarray, values: np.ndarray) -> None:
        if not len(t):
            return
        period = np.maximum(0, np.floor_divide(t, self.period_s)).astype(np.int64)
        order = np.argsort(period, kind="stable")
        period, values = period[order], np.asarray(values, dtype=np.float64)[order]
        cuts = np.flatnonzero(np.diff(period)) + 1
        per = self.data[metric]
        for p, chunk in zip(period[np.concatenate(([0], cuts))].tolist(), np.split(values, cuts)):
            per[p].extend(chunk.tolist())


def _request_samples(run: Run, s: _Samples, overhead_s: Sequence[float] | None) -> None:
    per_instance = 1.0 / max(run.instance_count, 1)
    loads: dict[tuple[int, str], list[float]] = defaultdict(list)
    for e in run.events:
        if e.kind == "load":
            loads[(e.instance, e.model)].append(e.time + e.seconds)
    for ends in loads.values():
        ends.sort()
    a = run.records.arrays()
    end, start, outcome = a["end"], a["start"], a["outcome"]
    index = {name: i for i, name in enumerate(OUTCOMES)}
    is_4xx = np.isin(outcome, [index[o] for o in ERRORS_4XX])
    is_5xx = np.isin(outcome, [index[o] for o in ERRORS_5XX])
    reached = a["instance"] >= 0
    ok = outcome == index[OK]
    s.add_many("Invocations", end, np.ones(len(end)))
    s.add_many("InvocationsPerInstance", end, np.full(len(end), per_instance))
    s.add_many("Invocation4XXErrors", end, is_4xx.astype(np.float64))
    s.add_many("Invocation5XXErrors", end, is_5xx.astype(np.float64))
    s.add_many("ModelCacheHit", end[reached], (~a["cold"][reached]).astype(np.float64))
    overhead = np.asarray(overhead_s, dtype=np.float64) if overhead_s is not None else np.zeros(len(end))
    s.add_many("ModelLatency", end[ok], (end[ok] - start[ok] - overhead[ok]) * 1e6)
    if overhead_s is not None:
        s.add_many("OverheadLatency", end[ok], overhead[ok] * 1e6)
    models = run.records.models
    for i in np.flatnonzero(a["cold"] & reached).tolist():
        ends = loads.get((int(a["instance"][i]), models[a["model"][i]]), ())
        j = bisect.bisect_left(ends, start[i])
        if j < len(ends):
            s.add("ModelLoadingWaitTime", float(end[i]), (min(ends[j], float(end[i])) - float(start[i])) * 1e6)


def _gauge_samples(run: Run, s: _Samples, periods: int) -> None:
    instances = set(range(run.instance_count))
    if run.events:
        steps = loaded_models(run.events)
        for inst in sorted(instances | set(steps)):
            st = steps.get(inst, [])
            times = [t for t, _ in st]
            for p in range(periods):
                t = min((p + 1) * s.period_s, run.duration_s)
                s.data["LoadedModelCount"][p].append(float(_value_at(st, times, t, before=0)))
    if run.memory and run.gpu_total_bytes > 0:
        by_inst: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for t, inst, used in sorted(run.memory):
            by_inst[inst].append((t, used))
        for inst, st in sorted(by_inst.items()):
            times = [t for t, _ in st]
            for sec in range(int(math.ceil(run.duration_s))):
                used = _value_at(st, times, float(sec))
                if used is not None:
                    s.add("GPUMemoryUtilization", float(sec), used / run.gpu_total_bytes * 100.0)


def datapoints(run: Run, *, period_s: float = PERIOD_S,
               overhead_s: Sequence[float] | None = None) -> list[Datapoint]:
    """Every statistic of every metric the run has data for, by metric then period."""
    if period_s <= 0:
        raise ConfigError("must be positive", field="period_s", value=period_s)
    if overhead_s is not None and len(overhead_s) != len(run.records):
        raise ConfigError(f"needs one value per record ({len(run.records)}), got {len(overhead_s)}",
                          field="overhead_s")
    s = _Samples(period_s)
    _request_samples(run, s, overhead_s)
    for e in run.events:
        if e.kind in _EVENT_METRICS:
            s.add(_EVENT_METRICS[e.kind], e.time + e.seconds, e.seconds * 1e6)
    _gauge_samples(run, s, max(1, math.ceil(run.duration_s / period_s)))
    for metric, per_instance in run.utilization.items():
        for per_second in per_instance:
            for sec, value in enumerate(per_second):
                s.add(metric, float(sec), value)
    out = []
    for metric, (_, unit, stats) in METRICS.items():
        for p, samples in sorted(s.data.get(metric, {}).items()):
            out.extend(Datapoint(metric, p * period_s, st, statistic(samples, st), unit) for st in stats)
    return out


def series(run: Run, *, period_s: float = PERIOD_S,
           overhead_s: Sequence[float] | None = None) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(period_start_s, value)] in each metric's usual statistic (see METRICS)."""
    return series_of(datapoints(run, period_s=period_s, overhead_s=overhead_s))


def series_of(points: Sequence[Datapoint]) -> dict[str, list[tuple[float, float]]]:
    """Datapoints (predicted, emulated or read from CloudWatch) as metric -> [(period_start_s,
    value)] in each metric's usual statistic."""
    out: dict[str, list[tuple[float, float]]] = {}
    for d in points:
        if d.statistic == METRICS[d.metric][0]:
            out.setdefault(d.metric, []).append((d.period_start_s, d.value))
    return out


CSV_COLUMNS = ("metric", "period_start_s", "statistic", "value", "unit")


def write_csv(run: Run, path: str | Path, *, period_s: float = PERIOD_S,
              overhead_s: Sequence[float] | None = None) -> Path:
    """Long format, one row per (metric, period, statistic)."""
    return write_points_csv(datapoints(run, period_s=period_s, overhead_s=overhead_s), path)


def write_points_csv(points: Sequence[Datapoint], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for d in points:
            w.writerow((d.metric, f"{d.period_start_s:g}", d.statistic, repr(d.value), d.unit))
    return path
