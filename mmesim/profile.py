"""ModelProfile: what one model costs on one GPU kind and framework.

Everything the simulator and the emulator need to know about a model, measured by
`mmesim calibrate` or derived from published figures (mmesim.derive.blog), always with
its provenance. Seconds and bytes inside; MiB and ms only at the edges.
"""

from __future__ import annotations

import math
from importlib import resources
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mmesim.errors import ConfigError
from mmesim.serde import Model, load

Framework = Literal["python", "pytorch", "onnx", "tensorrt"]


class BatchTiming(Model):
    """GPU (or CPU) time of one execution of a batch of ``batch`` requests."""

    batch: int = Field(ge=1)
    seconds: float = Field(gt=0)
    cv: float = Field(default=0.0, ge=0, description="coefficient of variation (spread)")


class Scaling(Model):
    """Total throughput of ``concurrent`` executions running at once, relative to one alone
    (1 at k = 1; k if they do not slow each other; flat once the device is saturated)."""

    concurrent: int = Field(ge=1)
    throughput: float = Field(gt=0)


class GpuWork(Model):
    """What one request asks of a GPU, from the model's architecture (not from timing):
    floating-point operations per item and the weight bytes an execution reads. The
    translation's per-GPU model turns them into compute- or bandwidth-bound time."""

    flops_per_item: float = Field(gt=0, description="floating-point operations (2 per multiply-add) for one item")
    weight_bytes: int = Field(ge=0, description="bytes of weights an execution reads, in the precision it runs")
    peak_fraction: float = Field(default=1.0, gt=0, le=1,
                                 description="fraction of the GPU's peak FLOP/s its engines attain (same on every GPU)")
    activation_bytes_per_item: float = Field(default=0.0, ge=0,
                                             description="bytes of activation traffic one item moves through GPU memory")
    fill_items_per_sm: float = Field(default=0.0, ge=0,
                                     description="items per SM a batch lacks before the GPU is full (0: any batch fills it)")
    launch_s: float = Field(default=0.0, ge=0,
                            description="host seconds launching an execution's kernels while the GPU runs them "
                                        "(TorchScript): the execution takes the longer of the two")
    source: str | None = None


class Warmth(Model):
    """How long an execution takes on a CPU host after the model has not executed for
    ``idle_s`` seconds, relative to the profile's figures (as they were measured, one request
    at a time)."""

    idle_s: float = Field(ge=0, description="time since the model's previous execution ended")
    factor: float = Field(gt=0, description="execution time relative to the profile's figures (1: as calibrated); "
                                            "with handoff_s, the stub's CPU alone")
    handoff_s: float | None = Field(default=None, ge=0,
                                    description="the hand-off to and from the stub after that idle (Triton's compute "
                                                "wall minus the stub's CPU): waking a thread that slept takes longer "
                                                "the longer it slept; None: the profile's handoff_s at any pace")
    cv: float | None = Field(default=None, ge=0,
                             description="spread of the execution after that idle (with handoff_s, the stub's CPU): "
                                         "the coefficient of variation of a gamma with the measured mean and 95th "
                                         "percentile; None: the service figures' cv")
    handoff_cv: float | None = Field(default=None, ge=0,
                                     description="the hand-off's spread after that idle, as cv; None: none")
    wakeup_s: float | None = Field(default=None, ge=0,
                                   description="how long a request waits for Triton's instance thread to wake after "
                                               "that idle (Triton's queue time, one request at a time); None: none")
    frontend_s: float | None = Field(default=None, ge=0,
                                     description="tritonserver's front-end CPU for a batch-1 KServe v2 JSON request "
                                                 "after the server idled that long (HTTP, parsing, the answer; its "
                                                 "threads and caches cool as the model's do); None: the profile's "
                                                 "request cost at any pace")
    model_thread_s: float | None = Field(default=None, ge=0,
                                         description="tritonserver's CPU on the model's own threads per request after "
                                                     "that idle (the profile's model_thread_s, paced); None: that "
                                                     "figure at any pace")


class WakePlacement(Model):
    """How a CPU-only host places a thread it wakes while one of its cores is idle and another
    runs a thread (instance type ``local``; ``mmesim calibrate`` measures it on a CPU, with the
    probe of ``mmesim.calibrate.placement``, and so does ``examples/host_wakeups.py``).

    Processor sharing puts such a thread on the idle core at once. Some kernels do not: on
    this project's 2-vCPU Firecracker VMs (idle vCPUs halt at once, ``sched_vcpu_pack``; Intel
    Xeon and AMD EPYC alike) 29-33 % of such threads ran on the busy core first, and the thread
    they displaced stood still, the other core idle, until the newcomer finished or the kernel
    moved one of them, at most 1.5-2.4 ms later. ``packed_share`` 0 is processor sharing. The probe measures both without Triton: ``packed_share`` from
    its chain pattern (clients, a relay and stubs passing 1 ms requests, as Triton's threads
    do): of two overlapping bursts, the share in which the first waited for a core;
    ``moved_after_s``, the p95 of the wait of two threads woken together whose bursts are
    longer than the move.

    And with every core busy, where processor sharing slows every thread alike: Linux (EEVDF,
    6.6 on) runs a thread it wakes at once in place of a running one, for a slice of its own,
    and the thread it displaced stands still for that long (on this project's AMD EPYC VM,
    no Triton: 31-98 % of newcomers ran at once, a 1 ms one its whole burst, the thread it
    displaced waiting 1.0-1.1 ms while the other core's ran on; from 1.5 ms on the two took
    turns in slices of 1.4 ms; docs/accuracy-this-machine.md, section 8). ``full_share``, the
    share of newcomers that ran at once on a full host; ``slice_s``, the CPU they ran before
    they first stood still. None: not measured (profiles calibrated before the probe measured
    it): processor sharing on a full host. A newcomer that did not run at once waited for the
    rest of a running thread's slice and then ran a slice in its place, or started on the first
    core that freed (section 9):
    ``late_wait_s``, the median of that wait; None: nobody waited, or not measured (such a
    newcomer then takes its fair share).
    """

    packed_share: float = Field(ge=0, le=1, description="share of such wake-ups that take a running thread's core")
    moved_after_s: float = Field(gt=0, le=1.0, description="how long the displaced thread stands still at most "
                                                          "before the kernel moves one of them to the idle core")
    full_share: float | None = Field(default=None, ge=0, le=1,
                                     description="with every core busy, the share of threads woken that run at once "
                                                 "in place of a running one; None: not measured (processor sharing)")
    slice_s: float | None = Field(default=None, gt=0, le=1.0,
                                  description="how long such a newcomer runs before it first stands still, the "
                                              "thread it displaced standing still meanwhile")
    late_wait_s: float | None = Field(default=None, gt=0, le=1.0,
                                      description="with every core busy, how long a newcomer that did not run at "
                                                  "once waited (the rest of a running thread's slice) before it ran "
                                                  "a slice in that one's place, unless a core freed first; None: its "
                                                  "fair share")
    source: str | None = Field(default=None, description="how it was measured: the probe, its host and date")

    @model_validator(mode="after")
    def _full_host_whole(self) -> "WakePlacement":
        if (self.full_share is None) != (self.slice_s is None):
            raise ValueError("full_share and slice_s go together: both measured (the probe's full host), or neither")
        if self.late_wait_s is not None and self.full_share is None:
            raise ValueError("late_wait_s is the full host's: it needs full_share and slice_s")
        return self

    @property
    def displaces(self) -> bool:
        """Whether any woken thread displaces a running one (else: processor sharing)."""
        return self.packed_share > 0 or bool(self.full_share) or bool(self.late_wait_s)


class WorkingMemory(Model):
    """Peak device (or, on a CPU, resident) bytes one execution of ``batch`` requests needs
    above the loaded copy's own: activations, workspace, allocator growth."""

    batch: int = Field(ge=1)
    bytes: int = Field(ge=0)


class TritonConfig(Model):
    """The parts of config.pbtxt that shape queueing: batching and execution instances."""

    max_batch_size: int = Field(default=0, ge=0, description="0 = no batching")
    dynamic_batching: bool = True
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_s: float = Field(default=0.0, ge=0)
    instance_count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _preferred_fit(self) -> "TritonConfig":
        for b in self.preferred_batch_sizes:
            if b < 1 or (self.max_batch_size and b > self.max_batch_size):
                raise ValueError(f"preferred batch size {b} outside 1..max_batch_size={self.max_batch_size}")
        return self

    @property
    def batch_limit(self) -> int:
        return max(1, self.max_batch_size) if self.dynamic_batching else 1


class Provenance(Model):
    """How a profile was made: enough to redo it, or to distrust it."""

    method: Literal["measured", "derived", "translated", "hand"]
    source: str
    date: str | None = None
    device: str | None = None
    driver: str | None = None
    triton_version: str | None = None
    host_cpu: str | None = None
    command: str | None = None
    notes: str | None = None


class ModelProfile(Model):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="architecture, e.g. resnet50")
    framework: Framework
    gpu: str = Field(description="catalogue GPU key it was measured on, or 'cpu'")
    artifact_bytes: int = Field(gt=0, description="model.tar.gz size: download and disk cache")
    gpu_memory_bytes: int = Field(ge=0, description="resident device memory of one loaded copy")
    baseline_gpu_bytes: int = Field(ge=0, description="fixed per-instance device memory (contexts, server), counted once")
    host_memory_bytes: int = Field(default=0, ge=0)
    load_s: float = Field(gt=0, description="time to load one copy from local disk")
    unload_s: float = Field(ge=0)
    service: list[BatchTiming] = Field(min_length=1)
    input_bytes: int = Field(gt=0, description="request payload on the wire")
    output_bytes: int = Field(default=1024, ge=0)
    decode_s_per_byte: float = Field(ge=0, description="host CPU seconds per payload byte to parse the request")
    host_cpu_speed: float = Field(default=1.0, gt=0,
                                  description="single-thread speed of the host decode was measured on (catalogue scale)")
    host_share: float = Field(default=0.0, ge=0, le=1,
                              description="share of the batch-1 execution time bound by the host CPU (framework "
                                          "dispatch, Python backend), which follows the CPU, not the GPU, when translated")
    busy_host_share: float | None = Field(default=None, ge=0, le=1,
                                          description="share of each extra batched item's time bound by the host; "
                                                      "None: as host_share")
    work: GpuWork | None = Field(default=None, description="the model's FLOPs and weight bytes (translation)")
    gpu_overlap: float = Field(default=0.0, ge=0, le=1,
                               description="0: concurrent executions on one GPU serialise; 1: they overlap perfectly")
    concurrency_scaling: list[Scaling] = Field(
        default_factory=list,
        description="measured total throughput at k = 1, 2, 4, 8 concurrent executions of different copies, "
                    "relative to one alone: the device's ceiling; empty: gpu_overlap's (1 + overlap (k - 1)) "
                    "without a ceiling")
    request_overhead_s: float = Field(default=0.0, ge=0,
                                      description="server CPU seconds per request beyond decoding its payload "
                                                  "(HTTP handling, request and response objects)")
    model_thread_s: float = Field(default=0.0, ge=0,
                                  description="server CPU seconds per execution on the model's own threads (its "
                                              "instance thread and scheduler: a Python backend's messages to its "
                                              "stub), inside Triton's compute time; 0: not read apart, so part of "
                                              "request_overhead_s (calibrations before 2026-12-06 04:00 UTC)")
    cpu_threads: int | None = Field(default=None, ge=1,
                                    description="cores one execution can use on a CPU (torch threads of the "
                                                "Python-backend instance); None: one")
    handoff_s: float = Field(default=0.0, ge=0,
                             description="per execution, the wait that holds the instance but computes nothing: the "
                                         "Python backend's hand-offs to and from its stub process (wake-ups that need "
                                         "a core, so they slow as the host's cores are oversubscribed); 0: none "
                                         "(GPU, native backends)")
    host_warmth: list[Warmth] = Field(
        default_factory=list,
        description="on a CPU host, how long an execution takes by the time since the model last executed "
                    "(mmesim calibrate paces requests at a few gaps): a model that has idled runs cold (its memory "
                    "has left the caches; a VM's idle vCPU gives its physical core away); empty: the profile's "
                    "figures at any pace")
    host_wakeups: WakePlacement | None = Field(
        default=None,
        description="on a CPU host, how it places a thread woken beside a running one while another core idles, "
                    "measured by mmesim calibrate before it started the server (a property of the host, not the "
                    "model: instance type local predicts with it unless the endpoint gives its own); None: not "
                    "measured (processor sharing)")
    first_executions_s: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=list,
        description="seconds a freshly loaded copy's first executions take beyond its steady time, in order "
                    "(mmesim calibrate times a fresh copy's first batch-1 executions): the backend warms up on its "
                    "first requests (lazy initialisation, first allocations); empty: none")
    max_inflight: int | None = Field(default=None, ge=1,
                                     description="requests in flight per instance beyond which the server sheds load")
    triton: TritonConfig = Field(default_factory=TritonConfig)
    working_memory: list[WorkingMemory] = Field(
        default_factory=list, description="peak bytes above resident during one execution, by batch size; "
                                          "empty: none (an execution never runs out of memory)")
    leak_bytes_per_unload: int = Field(default=0, ge=0,
                                       description="bytes a load/unload cycle leaves behind, until the server restarts")
    memory_source: str | None = Field(default=None,
                                      description="how working_memory and leak_bytes_per_unload were taken "
                                                  "(measured, or an estimate and where from)")
    provenance: Provenance

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        from mmesim.catalog import load_catalog
        gpus = load_catalog().gpus
        if v != "cpu" and v.lower() not in gpus:
            raise ValueError(f"unknown GPU; use 'cpu' or one of {', '.join(gpus)}")
        return v.lower()

    @field_validator("service")
    @classmethod
    def _sorted_unique(cls, v: list[BatchTiming]) -> list[BatchTiming]:
        return _sorted_by(v, "batch", "batch sizes repeat")

    def service_time(self, batch: int) -> float:
        """Mean execution time for ``batch`` requests: piecewise linear in the batch size,
        extrapolated from the last two points (or proportionally from one)."""
        pts = self.service
        if len(pts) == 1:
            return pts[0].seconds * batch / pts[0].batch if batch > pts[0].batch else pts[0].seconds
        for lo, hi in zip(pts, pts[1:]):
            if batch <= hi.batch:
                if batch <= lo.batch:
                    return lo.seconds
                f = (batch - lo.batch) / (hi.batch - lo.batch)
                return lo.seconds + f * (hi.seconds - lo.seconds)
        lo, hi = pts[-2], pts[-1]
        return hi.seconds + (batch - hi.batch) * (hi.seconds - lo.seconds) / (hi.batch - lo.batch)

    @field_validator("concurrency_scaling")
    @classmethod
    def _scaling(cls, v: list[Scaling]) -> list[Scaling]:
        v = _sorted_by(v, "concurrent", "concurrency values repeat")
        if v and v[0].concurrent != 1:
            raise ValueError("the curve starts at concurrent: 1 (one execution alone)")
        return v

    @field_validator("host_warmth")
    @classmethod
    def _warmth_sorted(cls, v: list[Warmth]) -> list[Warmth]:
        v = _sorted_by(v, "idle_s", "host_warmth idle_s values repeat")
        for attr in ("handoff_s", "cv", "handoff_cv", "wakeup_s", "frontend_s", "model_thread_s"):
            if len({getattr(w, attr) is None for w in v}) > 1:
                raise ValueError(f"{attr} is given at some idle_s and not at others: at every point or none")
        return v

    def warmth_factor(self, idle_s: float) -> float:
        """An execution's time relative to the profile's figures after the model has not
        executed for ``idle_s`` seconds: linear between measured points, the nearest end's
        beyond them; 1 without any."""
        return _between(self.host_warmth, idle_s, "factor", 1.0)

    @property
    def handoff_by_idle(self) -> bool:
        """Whether host_warmth holds the hand-off at each idle (calibrations since 2026-12-06);
        then ``factor`` is the stub's CPU alone and ``warmth_handoff`` the rest."""
        return bool(self.host_warmth) and self.host_warmth[0].handoff_s is not None

    def warmth_handoff(self, idle_s: float) -> float:
        """The hand-off of an execution after ``idle_s`` idle: between measured points as
        ``warmth_factor``; the profile's handoff_s where host_warmth does not hold it."""
        return _between(self.host_warmth, idle_s, "handoff_s", self.handoff_s) if self.handoff_by_idle \
            else self.handoff_s

    @property
    def spread_by_idle(self) -> bool:
        """Whether host_warmth holds each execution's spread after each idle (calibrations
        since 2026-12-06, later in the day): ``warmth_spread``."""
        return bool(self.host_warmth) and self.host_warmth[0].cv is not None

    def warmth_spread(self, idle_s: float, u: float) -> tuple[float, float]:
        """(cv of the stub's CPU, cv of the hand-off) for an execution after ``idle_s`` idle,
        ``u`` uniform on [0, 1): between two measured pauses, one of theirs, the later one's
        with probability growing linearly across the interval (a mixture of the two measured
        spreads, not an interpolated one: the simulator keeps a block of variates per spread,
        and it should meet a few, not one per idle time); the nearest end's beyond them."""
        pts = self.host_warmth
        if not pts or pts[0].cv is None:
            return 0.0, 0.0
        pick = pts[0] if idle_s <= pts[0].idle_s else pts[-1]
        for lo, hi in zip(pts, pts[1:]):
            if lo.idle_s < idle_s <= hi.idle_s:
                pick = hi if u < (idle_s - lo.idle_s) / (hi.idle_s - lo.idle_s) else lo
                break
        return pick.cv, pick.handoff_cv or 0.0

    @property
    def wakeup_by_idle(self) -> bool:
        """Whether host_warmth holds the instance thread's wake-up after each idle."""
        return bool(self.host_warmth) and self.host_warmth[0].wakeup_s is not None

    def warmth_wakeup(self, idle_s: float) -> float:
        """Seconds a request waits for Triton's instance thread after ``idle_s`` idle; 0 where
        host_warmth does not hold it."""
        return _between(self.host_warmth, idle_s, "wakeup_s", 0.0) if self.wakeup_by_idle else 0.0

    @property
    def frontend_by_idle(self) -> bool:
        """Whether host_warmth holds the server's front-end CPU after each idle (calibrations
        since 2026-12-06, morning)."""
        return bool(self.host_warmth) and self.host_warmth[0].frontend_s is not None and self.frontend_ref_s > 0

    @property
    def frontend_ref_s(self) -> float:
        """The front end's CPU for a batch-1 JSON request as the request cost has it (measured
        with the server kept busy between requests: its statistics read around each)."""
        return self.request_overhead_s + self.decode_s_per_byte * self.input_bytes

    def warmth_frontend(self, idle_s: float) -> float:
        """The front end's CPU for a batch-1 JSON request after the server had nothing to do for
        ``idle_s`` seconds: between measured points as ``warmth_factor``; the request cost's
        figure where host_warmth does not hold it."""
        return _between(self.host_warmth, idle_s, "frontend_s", 0.0) if self.frontend_by_idle \
            else self.frontend_ref_s

    def frontend_factor(self, idle_s: float) -> float:
        """A request's handling relative to the profile's request cost after that idle (so a
        larger body scales alike); 1 where host_warmth does not hold it."""
        return self.warmth_frontend(idle_s) / self.frontend_ref_s if self.frontend_by_idle else 1.0

    @property
    def model_thread_by_idle(self) -> bool:
        """Whether host_warmth holds the server's CPU on the model's threads after each idle."""
        return bool(self.host_warmth) and self.host_warmth[0].model_thread_s is not None

    def warmth_model_thread(self, idle_s: float) -> float:
        """The server's CPU on the model's threads for an execution after the model idled
        ``idle_s`` seconds; the profile's model_thread_s where host_warmth does not hold it."""
        return _between(self.host_warmth, idle_s, "model_thread_s", self.model_thread_s) \
            if self.model_thread_by_idle else self.model_thread_s

    @field_validator("working_memory")
    @classmethod
    def _working_sorted(cls, v: list[WorkingMemory]) -> list[WorkingMemory]:
        return _sorted_by(v, "batch", "working-memory batch sizes repeat")

    def working_bytes(self, batch: int) -> int:
        """Peak bytes above resident for one execution of ``batch``: piecewise linear between
        measured batch sizes, proportional beyond the largest (activations grow with the
        batch), the smallest's below it."""
        pts = self.working_memory
        if not pts:
            return 0
        if batch <= pts[0].batch:
            return pts[0].bytes
        for lo, hi in zip(pts, pts[1:]):
            if batch <= hi.batch:
                return int(lo.bytes + (batch - lo.batch) * (hi.bytes - lo.bytes) / (hi.batch - lo.batch))
        return int(pts[-1].bytes * batch / pts[-1].batch)

    def handling_s(self, payload_bytes: int, model_threads: bool = True) -> float:
        """The server's CPU seconds to handle one request of ``payload_bytes`` (HTTP, parsing the
        body, the answer), with its model's threads' (``model_thread_s``) unless something runs
        those beside the execution instead (the shared cores of a CPU-only host)."""
        return self.request_overhead_s + self.decode_s_per_byte * payload_bytes \
            + (self.model_thread_s if model_threads else 0.0)

    def service_cv(self, batch: int) -> float:
        return min(self.service, key=lambda t: abs(t.batch - batch)).cv


def _between(pts: list, x: float, attr, default: float, log: bool = False) -> float:
    """``attr`` (a field's name, or a function of a point) of points sorted by ``idle_s`` at
    ``x``: linear between them (in log idle with ``log``, idle_s > 0), the nearest end's
    beyond; ``default`` without any."""
    if not pts:
        return default
    value = attr if callable(attr) else attrgetter(attr)
    if x <= pts[0].idle_s:
        return value(pts[0])
    for lo, hi in zip(pts, pts[1:]):
        if x <= hi.idle_s:
            a, b = value(lo), value(hi)
            at = math.log(x / lo.idle_s) / math.log(hi.idle_s / lo.idle_s) if log \
                else (x - lo.idle_s) / (hi.idle_s - lo.idle_s)
            return a + at * (b - a)
    return value(pts[-1])


def _sorted_by(points: list, key: str, repeated: str) -> list:
    """Curve points sorted by ``key``, each key once (a repeat is ambiguous, not averaged)."""
    points = sorted(points, key=lambda p: getattr(p, key))
    if len({getattr(p, key) for p in points}) != len(points):
        raise ValueError(repeated)
    return points


def builtin_dir() -> Path:
    return Path(str(resources.files("mmesim.profiles")))


def builtin_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(builtin_dir().glob("*.json"))}


def measured_profiles() -> dict[str, Path]:
    """Profiles calibrated on a real Triton (calibration/profiles, shipped in the package as
    mmesim/profiles/measured), by name; their calibration records are not profiles."""
    return {p.stem: p for p in sorted((builtin_dir() / "measured").glob("*.json"))
            if not p.name.endswith(".calibration.json")}


def shipped_profiles() -> dict[str, Path]:
    """Every profile reachable by name: derived from published figures, then measured."""
    return builtin_profiles() | measured_profiles()


def load_profile(name_or_path: str | Path) -> ModelProfile:
    """A shipped name (``resnet50-pytorch-t4``, ``tiny-bert-python-cpu``) or a path to a JSON/YAML profile."""
    path = Path(name_or_path)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        return load(ModelProfile, path)
    known = shipped_profiles()
    if str(name_or_path) not in known:
        raise ConfigError(f"no built-in profile of that name and no such file; built-in: {', '.join(known) or 'none'}",
                          field="profile", value=str(name_or_path))
    return load(ModelProfile, known[str(name_or_path)])
