"""RequestRecord and Run: what a simulation or a measured load test produced.

Simulated and measured runs produce the SAME records, so one Summary function serves both.
Records are stored column-wise (compact: ~30 bytes a request) and handed out as
RequestRecord objects only when asked.
"""

from __future__ import annotations

import csv
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmesim.errors import ConfigError
from mmesim.optional import require

OK = "ok"
# Failure causes, named as SageMaker (or the container behind it) names them.
MODEL_NOT_READY = "ModelNotReadyException"   # 429: model not loaded in time; loading continues
TIMEOUT = "InvocationTimeout"                # 424 ModelError: no response within the invocation timeout
OVERLOADED = "ServiceUnavailable"            # 503: the instance sheds load
OUT_OF_MEMORY = "InsufficientMemory"         # 507 from the container: nothing could be unloaded
MODEL_ERROR = "ModelError"                   # 424: the model itself failed
VALIDATION = "ValidationError"               # 400
INTERNAL = "InternalFailure"                 # 500
DISK_FULL = "InsufficientDiskSpace"
"""507 from the platform: the instance's disk cannot take the model's artifact even after
deleting every cached artifact not in use (each copy in use stays on disk). SageMaker's MME
guide asks for storage to hold the models served and names no error for running out; 507
(HTTP "Insufficient Storage") is the container's answer to a load it cannot take."""
EXECUTION_OOM = "ExecutionOutOfMemory"
"""424 ModelError whose OriginalMessage is the backend's out-of-memory error: the model was
loaded, but an execution needed more working memory (activations, workspace) than was free
(Triton fails that inference and serves the next one)."""
# New causes go last: records store a cause as its index here.
OUTCOMES = (OK, MODEL_NOT_READY, TIMEOUT, OVERLOADED, OUT_OF_MEMORY, MODEL_ERROR, VALIDATION, INTERNAL, DISK_FULL,
            EXECUTION_OOM)
_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
# what Run.server_ms holds per executed request (ms): the wait in its model's queue, the
# execution, when the execution began (from the run's start, or the first request's arrival),
# and all its time inside the server (arrival at the instance, or Triton's HTTP receive, to
# the answer sent)
SERVER_PARTS = ("queue", "compute", "start", "server")


def model_error_cause(message: str) -> str:
    """The cause of a ModelError from the container's message: ExecutionOutOfMemory when the
    backend says it ran out of memory (PyTorch's and ONNX Runtime's CUDA errors, TensorRT's
    allocation failures, as Triton relays them), else ModelError."""
    return EXECUTION_OOM if "out of memory" in message.lower() else MODEL_ERROR


@dataclass(frozen=True, slots=True)
class RequestRecord:
    start: float          # seconds since the run began, when the client started the request
    end: float            # when the client had its answer (or gave up)
    model: str            # target model (e.g. resnet50-v3)
    instance: int         # instance index, -1 if the request never reached one
    outcome: str          # OK or a failure cause
    cold: bool            # the model had to be loaded for this request

    @property
    def ok(self) -> bool:
        return self.outcome == OK


class Records:
    """Column store of RequestRecords. ``append`` is on the simulator's hot path."""

    __slots__ = ("models", "_model_index", "start", "end", "model", "instance", "outcome", "cold")

    def __init__(self, models: list[str] | None = None):
        self.models: list[str] = []
        self._model_index: dict[str, int] = {}
        for m in models or ():
            self.model_id(m)
        self.start, self.end = array("d"), array("d")
        self.model, self.instance = array("i"), array("h")
        self.outcome, self.cold = array("b"), array("b")

    def model_id(self, name: str) -> int:
        idx = self._model_index.get(name)
        if idx is None:
            idx = self._model_index[name] = len(self.models)
            self.models.append(name)
        return idx

    def append(self, start: float, end: float, model: int, instance: int, outcome: int, cold: bool) -> None:
        self.start.append(start)
        self.end.append(end)
        self.model.append(model)
        self.instance.append(instance)
        self.outcome.append(outcome)
        self.cold.append(cold)

    def add(self, rec: RequestRecord) -> None:
        if rec.outcome not in _OUTCOME_INDEX:
            raise ConfigError(f"unknown outcome; known: {', '.join(OUTCOMES)}", field="outcome", value=rec.outcome)
        self.append(rec.start, rec.end, self.model_id(rec.model), rec.instance, _OUTCOME_INDEX[rec.outcome], rec.cold)

    def __len__(self) -> int:
        return len(self.start)

    def __iter__(self):
        for i in range(len(self)):
            yield RequestRecord(self.start[i], self.end[i], self.models[self.model[i]], self.instance[i],
                                OUTCOMES[self.outcome[i]], bool(self.cold[i]))

    def arrays(self) -> dict[str, np.ndarray]:
        """Numpy views for vectorised summaries (no copies)."""
        return {
            "start": np.frombuffer(self.start, dtype=np.float64),
            "end": np.frombuffer(self.end, dtype=np.float64),
            "model": np.frombuffer(self.model, dtype=np.int32),
            "instance": np.frombuffer(self.instance, dtype=np.int16),
            "outcome": np.frombuffer(self.outcome, dtype=np.int8),
            "cold": np.frombuffer(self.cold, dtype=np.int8).astype(bool),
        }

    def to_pandas(self, users: list[tuple[float, int]] | None = None):
        """One row per request: times (s since the run began), latency, target, instance,
        outcome, cold start; with ``users`` (a Run's step function) the user count at its start."""
        pd = require("pandas", "pandas", "DataFrames")
        a = self.arrays()
        df = pd.DataFrame({
            "start_s": a["start"], "end_s": a["end"], "latency_ms": (a["end"] - a["start"]) * 1000.0,
            "model": pd.Categorical.from_codes(a["model"], categories=self.models),
            "instance": a["instance"].astype(int), "outcome": pd.Categorical.from_codes(a["outcome"], categories=OUTCOMES),
            "ok": a["outcome"] == 0, "cold": a["cold"],
        })
        if users:
            times = np.array([t for t, _ in users])
            counts = np.array([u for _, u in users])
            idx = np.searchsorted(times, a["start"], side="right") - 1
            df["users"] = np.where(idx >= 0, counts[np.maximum(idx, 0)], 0)
        return df

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.start, self.end, self.model, self.instance, self.outcome, self.cold))

    # -- files ---------------------------------------------------------------------------
    COLUMNS = ("start", "end", "model", "instance", "outcome", "cold")

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        a = self.arrays()
        models, outcomes = np.array(self.models, dtype=object), np.array(OUTCOMES, dtype=object)
        fmt = "{:.6f}".format
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.COLUMNS)
            for i in range(0, len(self), 65536):      # a slice at a time: memory stays flat
                s = slice(i, i + 65536)
                w.writerows(zip(map(fmt, a["start"][s].tolist()), map(fmt, a["end"][s].tolist()),
                                models[a["model"][s]].tolist(), a["instance"][s].tolist(),
                                outcomes[a["outcome"][s]].tolist(), a["cold"][s].astype(np.int8).tolist()))
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> "Records":
        path = Path(path)
        out = cls()
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or set(cls.COLUMNS) - set(reader.fieldnames):
                    raise ConfigError(f"needs columns {', '.join(cls.COLUMNS)}", source=str(path))
                for row in reader:
                    where = f"{path}:{reader.line_num}"
                    try:
                        start, end, instance = float(row["start"]), float(row["end"]), int(row["instance"])
                    except (TypeError, ValueError):      # a short row gives None
                        raise ConfigError("start and end must be numbers, instance a whole number", source=where,
                                          value=[row.get(c) for c in cls.COLUMNS]) from None
                    if not (math.isfinite(start) and math.isfinite(end) and end >= start):
                        bad = "end" if math.isfinite(start) else "start"
                        raise ConfigError("needs finite times with end >= start", source=where, field=bad,
                                          value=row[bad])
                    try:
                        out.add(RequestRecord(start, end, row["model"], instance, row["outcome"],
                                              row["cold"] in ("1", "True", "true")))
                    except ConfigError as exc:
                        raise ConfigError(exc.message, source=where, field=exc.field, value=exc.value) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x}", source=str(path)) from None
        return out


@dataclass
class ModelEvent:
    """A model moving between tiers on one instance (what CloudWatch's Model* metrics count).
    A simulation appends a download or a load when it completes (its length depends on what
    else shared the network, disk, CPUs and PCIe meanwhile), so the list is not in time order."""

    time: float           # when the move began
    instance: int
    model: str
    kind: str             # "preload" (before the run) | "download" | "load" | "unload" | "evict-disk"
    seconds: float        # how long it took
    thread_wait_s: float = 0.0   # a load: of ``seconds``, the wait for one of the server's load threads


@dataclass
class Run:
    """Everything one run (simulated or measured) produced, ready for ``summarize``.

    ``users`` is the user count as a step function [(time, users), ...]; ``memory`` samples
    GPU memory used per instance [(time, instance, bytes)]; ``gpu_busy_s`` is GPU busy time
    per instance (for GPUUtilization)."""

    records: Records
    duration_s: float
    users: list[tuple[float, int]] = field(default_factory=list)
    user_steps: list[int] = field(default_factory=list)
    request_name: dict[str, str] = field(default_factory=dict)   # target model -> Locust request name
    events: list[ModelEvent] = field(default_factory=list)
    memory: list[tuple[float, int, int]] = field(default_factory=list)
    inflight_peaks: list[tuple[float, int, int]] = field(default_factory=list)  # (second end, instance, peak)
    utilization: dict[str, list[list[float]]] = field(default_factory=dict)  # metric -> per instance, per second, %
    gpu_total_bytes: int = 0
    gpu_busy_s: list[float] = field(default_factory=list)
    instance_type: str = ""
    instance_count: int = 1
    price_usd_per_hour: float = 0.0
    max_models_loaded: int | None = None
    memory_trace: list[tuple[int, int]] = field(default_factory=list)  # (models loaded, bytes used)
    kind: str = "prediction"            # or "measurement"
    # What produced the run (one typed field per fact; add a field here rather than a loose dict).
    seed: int | None = None             # the simulator's seed; None for a measurement
    gpu: str = ""                       # GPU kind of the instances (catalog key, e.g. "t4")
    profiles: list[str] = field(default_factory=list)      # profile names, in the order of ``copies``
    translated: list[str] = field(default_factory=list)    # profiles translated from another GPU
    cpu_figures: list[str] = field(default_factory=list)   # profiles measured on CPU, used unchanged on a GPU
    other_processor: list[str] = field(default_factory=list)  # CPU profiles from another processor, used on local
    host_wakeups: dict | None = None    # a prediction on local: the host's placement it took (WakePlacement)
    unweighted: list[str] = field(default_factory=list)    # profiles a mix workload's weights leave out (never asked)
    copies: list[int] = field(default_factory=list)        # copies per profile the traffic targets
    copies_loaded_at_start: int = 0     # copies already loaded when the traffic began (warm start)
    targets: int = 0                    # distinct target models
    max_inflight_per_instance: int | None = None  # None: unlimited
    cpu_busy_s: list[float] = field(default_factory=list)  # host CPU busy seconds per instance (summed over cores)
    vcpus: int = 0                      # vCPUs per instance
    generator_workers: int = 0          # load generator worker processes
    generator_busy_s: list[float] = field(default_factory=list)  # busy seconds per generator worker
    generator_cpu_s_per_request: float | None = None  # measured: client CPU per request sent
    locust_history: list[dict] | None = None  # measured by Locust: its own _stats_history rows
    backend: str = ""                   # a measurement by `mmesim emulate`: "triton" | "virtual"
    # a measurement: who observed what (summary.OBSERVED's groups -> "locust" | "emulator log" |
    # "cloudwatch"); a group absent is unknown, never 0. A prediction's are all the simulator's.
    sources: dict[str, str] = field(default_factory=dict)
    backend_restarts: list[int] = field(default_factory=list)   # emulator: model-server restarts per instance
    # with autoscaling: [(time, instances provisioned (billed), instances in service)] at each change
    instance_timeline: list[tuple[float, int, int]] = field(default_factory=list)
    # inside the server, per executed request: {part: ms} for SERVER_PARTS (mmesim.triton.trace):
    # the simulator's when asked for, a measurement's from Triton's trace; sources["server"] says which
    server_ms: dict[str, Any] | None = None

    def mean_instances(self) -> float:
        """Instances billed, averaged over the run (instance_count without autoscaling)."""
        tl = self.instance_timeline
        if not tl or self.duration_s <= 0:
            return float(self.instance_count)
        ends = [t for t, _, _ in tl[1:]] + [self.duration_s]
        return sum(n * (min(e, self.duration_s) - min(t, self.duration_s))
                   for (t, n, _), e in zip(tl, ends)) / self.duration_s

    def to_pandas(self):
        """One row per request as a pandas DataFrame, with the user count when it started
        (needs the [pandas] extra; summaries, comparisons and folders: mmesim.frames)."""
        return self.records.to_pandas(self.users)

    def users_at(self, t: float) -> int:
        """The user count in force at time t (0 before the first change)."""
        n = 0
        for when, users in self.users:
            if when > t:
                break
            n = users
        return n
