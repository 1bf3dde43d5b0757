"""The emulator's live metrics under SageMaker's CloudWatch names (mmesim.results.cloudwatch
defines them for runs), as Prometheus text and as JSON. Latencies and model times are in
microseconds, as CloudWatch reports them; memory utilisation in percent of the instance's
total (NVML total, or the memory budget on ``local``)."""

from __future__ import annotations

from collections import defaultdict

from mmesim.results.cloudwatch import ERRORS_4XX, ERRORS_5XX
from mmesim.results.records import OK, ModelEvent

TIMES = {"download": "ModelDownloadingTime", "load": "ModelLoadingTime", "unload": "ModelUnloadingTime"}
LATENCIES = ("ModelLatency", "OverheadLatency", "ModelLoadingWaitTime", *TIMES.values())


class Metrics:
    def __init__(self, endpoint: str, instances: int, variant: str = "AllTraffic"):
        self.endpoint, self.n, self.variant = endpoint, instances, variant
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0] * instances)
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * instances)
        self.samples: dict[str, list[int]] = defaultdict(lambda: [0] * instances)
        self.failures: dict[str, list[int]] = defaultdict(lambda: [0] * instances)   # by cause (outcome)

    def request(self, instance: int, outcome: str, cold: bool | None, total_s: float, model_s: float | None,
                wait_s: float) -> None:
        i = max(instance, 0)
        c = self.counts
        c["Invocations"][i] += 1
        c["Invocation4XXErrors"][i] += outcome in ERRORS_4XX
        c["Invocation5XXErrors"][i] += outcome in ERRORS_5XX
        if outcome != OK:
            self.failures[outcome][i] += 1
        if cold is not None and instance >= 0:
            c["ModelCacheHit"][i] += not cold
            self.samples["ModelCacheHit"][i] += 1
        if outcome == OK and model_s is not None:
            self._time("ModelLatency", i, model_s)
            self._time("OverheadLatency", i, max(0.0, total_s - model_s - wait_s))
        if cold:
            self._time("ModelLoadingWaitTime", i, wait_s)

    def event(self, ev: ModelEvent) -> None:
        if ev.kind in TIMES:
            self._time(TIMES[ev.kind], ev.instance, ev.seconds)

    def _time(self, name: str, i: int, seconds: float) -> None:
        self.sums[name][i] += seconds * 1e6
        self.samples[name][i] += 1

    def snapshot(self, platform) -> dict:
        """Every metric per instance: counters, latency sums/counts/averages, gauges."""
        out: dict = {"EndpointName": self.endpoint, "VariantName": self.variant, "instances": []}
        for inst in platform.instances:
            i = inst.index
            b = inst.backend
            used, total = inst.memory_used, b.total_bytes
            row = {"Instance": i,
                   "Invocations": self.counts["Invocations"][i],
                   "InvocationsPerInstance": self.counts["Invocations"][i],
                   "Invocation4XXErrors": self.counts["Invocation4XXErrors"][i],
                   "Invocation5XXErrors": self.counts["Invocation5XXErrors"][i],
                   "ModelCacheHit": self.counts["ModelCacheHit"][i],
                   "ModelCacheHitSampleCount": self.samples["ModelCacheHit"][i],
                   "LoadedModelCount": inst.loaded_count,
                   "GPUMemoryUsedBytes": used, "GPUMemoryTotalBytes": total,
                   "GPUMemoryUtilization": 100.0 * used / total if total else 0.0,
                   "MemoryBudgetBytes": inst.budget, "CommittedBytes": inst.committed,
                   "InFlight": inst.inflight, "BackendRestarts": inst.restarts,
                   "FailuresByCause": {cause: n[i] for cause, n in sorted(self.failures.items()) if n[i]}}
            for key, busy in (("GPUBusySeconds", b.gpu_busy_s()), ("CPUBusySeconds", b.cpu_busy_s())):
                if busy is not None:
                    row[key] = busy
            for name in LATENCIES:
                n = self.samples[name][i]
                row[name] = {"Sum": self.sums[name][i], "SampleCount": n,
                             "Average": self.sums[name][i] / n if n else 0.0}
            out["instances"].append(row)
        return out



def prometheus(endpoints: list[tuple[Metrics, object]]) -> str:
    """Prometheus text exposition of every endpoint's metrics (labels EndpointName,
    VariantName, Instance): counters, gauges, and latencies as summaries (sum, count)."""
    rows = []
    for metrics, platform in endpoints:
        snap = metrics.snapshot(platform)
        base = f'EndpointName="{snap["EndpointName"]}",VariantName="{snap["VariantName"]}"'
        rows += [(f'{base},Instance="{r["Instance"]}"', r) for r in snap["instances"]]
    lines: list[str] = []
    counters = ("Invocations", "InvocationsPerInstance", "Invocation4XXErrors", "Invocation5XXErrors",
                "ModelCacheHit", "BackendRestarts")
    gauges = ("LoadedModelCount", "GPUMemoryUtilization", "GPUMemoryUsedBytes", "GPUMemoryTotalBytes",
              "MemoryBudgetBytes", "CommittedBytes", "InFlight", "GPUBusySeconds", "CPUBusySeconds")
    for name in counters:
        lines.append(f"# TYPE {name} counter")
        lines += [f"{name}{{{labels}}} {r[name]:g}" for labels, r in rows]
    lines.append("# TYPE InvocationFailures counter")     # by cause, as the request log names them
    lines += [f'InvocationFailures{{{labels},Cause="{cause}"}} {n}'
              for labels, r in rows for cause, n in r["FailuresByCause"].items()]
    for name in gauges:
        present = [(labels, r) for labels, r in rows if name in r]
        if present:
            lines.append(f"# TYPE {name} gauge")
            lines += [f"{name}{{{labels}}} {r[name]:g}" for labels, r in present]
    for name in LATENCIES:
        lines.append(f"# HELP {name} microseconds")
        lines.append(f"# TYPE {name} summary")
        for labels, r in rows:
            lines.append(f'{name}_sum{{{labels}}} {r[name]["Sum"]:.1f}')
            lines.append(f'{name}_count{{{labels}}} {r[name]["SampleCount"]}')
    return "\n".join(lines) + "\n"
