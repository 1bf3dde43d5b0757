"""`mmesim calibrate`: package a model, run it in a real Triton, measure it, and write the
ModelProfile the simulator reads (plus a report with every trace behind the numbers).

The steps: ``measure_memory`` (a null model, then copies loaded one at a time),
``measure_timing`` (executions by batch size, the server's cost per request, closed-loop
load), ``working.measure_bench`` (fresh copies loaded and unloaded: working memory, leak,
the model's own unload), the max-models procedure when asked, ``measure_copies_at_once`` (k copies executing
together, on the copies already loaded) and ``assemble_profile`` (the figures into a
ModelProfile, with notes saying how each was taken)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
import tempfile
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mmesim.calibrate.handoff import sequential_handoff_s
from mmesim.calibrate.latency import (FIRST_EXECUTIONS, WARMTH_GAPS_S, LoadPoint, RequestPoint, ScalingPoint,
                                      ServicePoint, WarmthPoint, batch_sizes, first_extra_s, in_threads,
                                      measure_first_executions, measure_load, measure_requests, measure_scaling,
                                      measure_service, measure_warmth, request_cost, stub_pid, warmth_curve)
from mmesim.calibrate.placement import measure_placement
from mmesim.calibrate.maxmodels import MaxModels, copy_name, max_models_loaded, mme_copy_loader
from mmesim.calibrate import working
from mmesim.calibrate.memory import ContainerMemory, HostMemory, MemorySample, NvmlMemory, cuda_index, parse_bytes, unloading
from mmesim.catalog import host_cores, host_cpu
from mmesim.errors import ConfigError, MissingPiece
from mmesim.profile import BatchTiming, ModelProfile, Provenance, Scaling, TritonConfig, WakePlacement, WorkingMemory
from mmesim.report.console import placement_text
from mmesim.triton.client import SERVER_FAILURES, MMEClient, kserve_client
from mmesim.triton.packaging import FRAMEWORKS, PackagedModel, check_model, package, package_null
from mmesim.units import GiB, MiB

MAX_JSON_BYTES = 16 * MiB      # request-cost bodies larger than this are not worth building


@dataclass
class CalibrateOptions:
    model: str
    framework: str = "python"
    device: str = "cpu"                       # cpu | cuda | cuda:N
    runner: str = "local"                     # local | docker
    copies: int = 2                           # copies loaded to measure per-copy memory
    max_models: bool = False
    threshold: float = 0.9
    memory_budget: str | int | None = None    # the "total" of the max-models rule (a cap on a GPU's)
    max_copies: int = 200
    inputs: list[str] | None = None
    max_batch: int | None = None
    batches: list[int] | None = None          # default: 1, 2, 4, ... max batch, until one takes stop_batch_s
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4])
    cycles: int = 3                           # load/unload cycles of fresh copies: working memory, leak, unload
    repeats: int = 5
    load_requests: int = 12
    scaling: list[int] | None = None          # concurrent copies for the ceiling (default: default_scaling)
    stop_batch_s: float | None = 1.0          # larger batches are not timed once an execution takes this long
    request_requests: int = 8                 # JSON requests per body size for the request cost
    warmth_s: float = 2.0                     # CPU: seconds of paced requests per gap (host_warmth; 0: none)
    placement_s: float = 4.0                  # CPU: seconds of the scheduler probe's chain (host_wakeups; 0: none)
    quick: bool = False                       # fewer repeats, concurrencies and copies: a first look
    cpu_threads: int | None = None            # torch threads per Python-backend instance (default: torch's)
    measure_overhead: bool = True             # load the null model to split process overhead from the model
    image: str | None = None                  # docker runner
    binary: str | None = None                 # local runner
    exec_log: str | None = None               # local runner: a folder the Python-backend models log each execution to
    workdir: str | None = None
    command: str | None = None                # for provenance

    def __post_init__(self):
        if self.scaling is None:
            self.scaling = default_scaling(self.device, self.threads)
        if self.quick:
            self.repeats = min(self.repeats, 3)
            self.concurrency = [c for c in self.concurrency if c <= 2] or [1]
            self.scaling = [k for k in self.scaling if k <= 2] or [1]
            self.request_requests = min(self.request_requests, 4)
            self.warmth_s = min(self.warmth_s, 0.5)
            self.placement_s = min(self.placement_s, 1.5)
            self.stop_batch_s = min(self.stop_batch_s or 0.5, 0.5)

    def check(self) -> None:
        check_model(self.model)
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"use one of {', '.join(FRAMEWORKS)}", field="--framework", value=self.framework)
        if self.runner not in ("local", "docker"):
            raise ConfigError("use local or docker", field="--runner", value=self.runner)
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError("use cpu, cuda or cuda:N", field="--device", value=self.device)
        if not 0 < self.threshold <= 1:
            raise ConfigError("must be in (0, 1]", field="--threshold", value=self.threshold)
        if self.copies < 1:
            raise ConfigError("must be at least 1", field="--copies", value=self.copies)
        if any(c < 1 for c in self.concurrency):
            raise ConfigError("must be positive", field="--concurrency", value=self.concurrency)
        if not self.scaling or min(self.scaling) != 1:
            raise ConfigError("concurrent copies must start at 1 (one alone is the reference)", field="--scaling",
                              value=self.scaling)
        if self.stop_batch_s is not None and self.stop_batch_s <= 0:
            raise ConfigError("must be positive", field="--stop-batch-s", value=self.stop_batch_s)
        if self.cycles < 0:
            raise ConfigError("must be 0 or more", field="--cycles", value=self.cycles)
        if not self.warmth_s >= 0:
            raise ConfigError("must be 0 or more seconds", field="--warmth-s", value=self.warmth_s)
        if not self.placement_s >= 0:
            raise ConfigError("must be 0 or more seconds", field="--placement-s", value=self.placement_s)
        for flag, value in (("--repeats", self.repeats), ("--max-copies", self.max_copies),
                            ("--cpu-threads", self.cpu_threads), ("--max-batch", self.max_batch)):
            if value is not None and value < 1:
                raise ConfigError("must be at least 1", field=flag, value=value)
        parse_bytes(self.memory_budget)
        if self.image and self.runner != "docker":
            raise ConfigError("a Triton image is for --runner docker", field="--image", value=self.image)
        if self.binary and self.runner != "local":
            raise ConfigError("a tritonserver binary is for --runner local", field="--tritonserver", value=self.binary)
        if self.framework == "tensorrt" and self.device == "cpu":
            raise MissingPiece("TensorRT engines run only on an NVIDIA GPU: use --device cuda on a GPU host, or "
                               "--framework python|pytorch|onnx on CPU")

    @property
    def threads(self) -> int | None:
        """Cores one execution can use on a CPU: the threads asked for, else torch's default (all)."""
        return None if self.device != "cpu" else (self.cpu_threads or host_cores())


def default_scaling(device: str, threads: int | None) -> list[int]:
    """Copies executing at once, up to twice as many as saturate the device: a GPU's ceiling
    needs k = 1, 2, 4, 8; on a CPU, copies of ``threads`` threads each fill the host's cores at
    cores / threads, so measuring far beyond that only loads more copies (seconds each) to read
    the same flat ceiling."""
    if device != "cpu":
        return [1, 2, 4, 8]
    saturating = max(1, host_cores() // max(1, threads or host_cores()))
    return [k for k in (1, 2, 4, 8) if k <= 2 * saturating] or [1, 2]


@dataclass
class Memory:
    """What loading copies cost: per copy, once (baseline), and in time."""

    names: list[str]
    per_copy_bytes: list[int]
    host_per_copy_bytes: list[int]
    baseline_bytes: int
    process_overhead_bytes: int | None
    load_s: list[float]
    trace: list[dict]


@dataclass
class Timing:
    """What executing and serving requests cost."""

    service: list[ServicePoint]
    requests: list[RequestPoint]
    decode_s_per_byte: float
    request_overhead_s: float
    request_cost_how: str
    load_points: list[LoadPoint]
    scaling: list[ScalingPoint]              # filled by measure_copies_at_once
    scaling_batch: int
    output_bytes: int
    warmth: list[WarmthPoint] = field(default_factory=list)   # CPU: requests paced 0-1000 ms apart (host_warmth)
    first: list[float] = field(default_factory=list)           # a fresh copy's first batch-1 executions (s)

    @property
    def model_thread_s(self) -> float:
        """The server's CPU per request on the model's threads: the median at the smallest body."""
        first = self.requests[0] if self.requests else None
        return statistics.median(first.model_cpu_s) if first and first.model_cpu_s else 0.0


@dataclass
class Calibration:
    """Everything measured: the profile and the traces it was computed from."""

    profile: ModelProfile
    per_copy_bytes: list[int]
    baseline_bytes: int
    process_overhead_bytes: int | None
    host_per_copy_bytes: list[int]
    load_s: list[float]
    unload_s: list[float]
    service: list[ServicePoint]
    requests: list[RequestPoint]
    load_points: list[LoadPoint]
    scaling: list[ScalingPoint]
    memory_trace: list[dict]
    load_average: tuple[float, float] = (0.0, 0.0)    # 1-minute load average at the start and the end
    max_models: MaxModels | None = None
    work: working.Working | None = None               # working memory, load/unload cycles
    warmth: list[WarmthPoint] = field(default_factory=list)   # CPU: requests paced 0-1000 ms apart (host_warmth)
    first_executions_s: list[float] = field(default_factory=list)   # a fresh copy's first batch-1 executions

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("profile", "max_models")}
        d["profile"] = self.profile.to_dict()
        if self.max_models:
            d["max_models"] = {"count": self.max_models.count, "threshold": self.max_models.threshold,
                               "stopped_by": self.max_models.stopped_by,
                               "trace": [asdict(s) for s in self.max_models.trace]}
        return d

    def save_report(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def catalog_key(device_name: str, total_bytes: int) -> str | None:
    """The catalogue GPU an NVML device name refers to (A100 40/80 GB told apart by memory);
    None if the catalogue has no such GPU."""
    from mmesim.catalog import load_catalog
    gpus = load_catalog().gpus
    matches = [g for k, g in gpus.items() if re.search(rf"\b{re.escape(k.split('-')[0])}\b", device_name, re.I)]
    if not matches:
        return None
    return min(matches, key=lambda g: abs(g.memory_gib * 2**30 - total_bytes)).key


def _server(options: CalibrateOptions, workdir: Path):
    if options.runner == "docker":
        from mmesim.triton.docker import CALIBRATION_IMAGE, DockerTriton
        return DockerTriton(workdir, image=options.image or CALIBRATION_IMAGE, device=options.device)
    from mmesim.triton.args import ServerOptions
    from mmesim.triton.local import LocalTriton
    server = LocalTriton(ServerOptions(exec_log=options.exec_log) if options.exec_log else None,
                         binary=options.binary, workdir=workdir / "server")
    if not onnx_in_python(options, server):
        server.installation.require_backend(options.framework)
    return server


def onnx_in_python(options: CalibrateOptions, server) -> bool:
    """ONNX is run by onnxruntime inside the Python backend where the server has no
    onnxruntime backend (the tritonserver bundled with nvidia-pytriton)."""
    backends = getattr(getattr(server, "installation", None), "available_backends", None)
    return options.framework == "onnx" and backends is not None and "onnxruntime" not in backends \
        and "python" in backends


def prove_device(server, workdir: Path, device: str, progress: Callable[[str], None], probe=None) -> None:
    """Before anything is measured: the null model loaded as KIND_GPU on ``device`` proves
    that this tritonserver, its stub and this torch can run there; if not, Triton's reason."""
    progress(f"checking that tritonserver can run a model on {device} (null model, KIND_GPU)")
    null = package_null(workdir / "device-check", device)
    client = MMEClient(server.sagemaker_url)
    try:
        client.load("mmesim-device-check", server.model_url(null.extract(workdir / "models" / "mmesim-device-check")))
        client.invoke("mmesim-device-check", null.spec.request_body(1))
        with unloading(getattr(server, "pid", None), ["mmesim-device-check"], probe):   # its CUDA context gone
            client.unload("mmesim-device-check")                                           # before the baseline
    except SERVER_FAILURES as exc:
        raise server.failure(f"running a model on {device} in this tritonserver", exc) from None
    finally:
        client.close()


@dataclass
class Bench:
    """A running Triton with the model packaged, the clients talking to it and the probes
    reading its memory."""

    options: CalibrateOptions
    workdir: Path
    server: object
    packaged: PackagedModel
    null: PackagedModel | None
    mme: MMEClient
    kserve: object
    probe: object                          # NvmlMemory | ContainerMemory | HostMemory
    host_probe: HostMemory | None          # GPU runs: the host side of each copy
    gpu_probe: NvmlMemory | None
    before_server: MemorySample | None     # GPU runs: device memory before the server started

    @property
    def spec(self):
        return self.packaged.spec

    @property
    def server_pid(self) -> int | None:
        return getattr(self.server, "pid", None)

    def load_copy(self, name: str) -> float:
        url = self.packaged.extract(self.workdir / "models" / name)
        return self.mme.load(name, self.server.model_url(url))

    def unload(self, name: str) -> float:
        """Unload a copy and return once it is gone, its stub and device memory included
        (``unloading``): the DELETE's seconds."""
        with unloading(self.server_pid, [name], self.probe):
            return self.mme.unload(name)


def start_bench(options: CalibrateOptions, stack: ExitStack, progress: Callable[[str], None]) -> Bench:
    """Package the model, start the server, connect the clients and probes (all stopped by ``stack``)."""
    if options.workdir:
        workdir = Path(options.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmesim-calibrate-")))
    budget = parse_bytes(options.memory_budget)
    gpu_probe = NvmlMemory(cuda_index(options.device), budget) if options.device != "cpu" else None
    if gpu_probe and catalog_key(gpu_probe.device, gpu_probe.device_total) is None:
        from mmesim.catalog import load_catalog
        raise MissingPiece(f"GPU {gpu_probe.index} is an '{gpu_probe.device}' ({gpu_probe.device_total / GiB:.1f} GiB), "
                           f"which the catalogue does not have ({', '.join(load_catalog().gpus)}): a profile names a "
                           "catalogue GPU, so that the simulator can translate it to instance types. Add it under "
                           "gpus: in mmesim/catalog/catalog.yaml (memory, FP32 and FP16 TFLOP/s, bandwidth) and run "
                           "again; nothing was measured")
    server = _server(options, workdir)     # finds binary / engine and backend before slow work
    in_python = onnx_in_python(options, server)

    before_server = gpu_probe.sample() if gpu_probe else None
    progress(f"starting tritonserver ({options.runner})")
    stack.enter_context(server)
    if getattr(server, "numpy_problem", None):
        progress(f"note: {server.numpy_problem}")
    if options.device != "cpu":
        prove_device(server, workdir, options.device, progress, gpu_probe)

    progress(f"packaging {options.model} for the {options.framework} backend"
             + (" (onnxruntime inside the Python backend)" if in_python else ""))
    packaged = package(options.model, options.framework, workdir / "artifact", device=options.device,
                       inputs=options.inputs, max_batch_size=options.max_batch, cpu_threads=options.cpu_threads,
                       onnx_in_python=in_python)
    null = package_null(workdir / "null-artifact", options.device) if (
        options.measure_overhead and packaged.in_python) else None
    mme = MMEClient(server.sagemaker_url)
    stack.callback(mme.close)
    kserve = kserve_client(server.http_url)
    stack.callback(kserve.close)
    pid = getattr(server, "pid", None)
    if gpu_probe:
        probe = gpu_probe
    elif options.runner == "docker":
        probe = ContainerMemory(server, budget)
    else:
        probe = HostMemory(pid, budget)
    host_probe = HostMemory(pid, budget) if (gpu_probe and pid) else None
    return Bench(options, workdir, server, packaged, null, mme, kserve, probe, host_probe, gpu_probe, before_server)


def measure_memory(bench: Bench, progress: Callable[[str], None]) -> Memory:
    """The null model's process overhead, then ``copies`` copies loaded one at a time: what
    each added (own pages, or device memory) and what stays once (the baseline)."""
    probe, host_probe, pid = bench.probe, bench.host_probe, bench.server_pid

    def own_bytes(before: MemorySample, after: MemorySample) -> int:
        """What one load added: new processes' own pages plus the server's growth (CPU),
        or the device's used-memory growth (GPU, container)."""
        if isinstance(probe, HostMemory):
            new = set(after.processes) - set(before.processes)
            grown = after.processes.get(pid, 0) - before.processes.get(pid, 0)
            return sum(after.processes[p] for p in new) + max(0, grown)
        return after.used - before.used

    trace: list[dict] = []
    start = probe.sample()
    trace.append({"event": "server ready", "used": start.used})

    overhead = None
    if bench.null is not None:
        progress("measuring the Python backend's per-process overhead (null model)")
        b = probe.sample()
        bench.mme.load("mmesim-null", bench.server.model_url(bench.null.extract(bench.workdir / "models" / "mmesim-null")))
        a = probe.sample()
        overhead = own_bytes(b, a)
        trace.append({"event": "null model loaded", "used": a.used, "own": overhead})
        bench.unload("mmesim-null")

    names = [copy_name(bench.spec.name, i) for i in range(bench.options.copies)]
    per_copy, host_per_copy, load_s = [], [], []
    for name in names:
        progress(f"loading {name}")
        b = probe.sample()
        hb = host_probe.sample().processes if host_probe else None
        load_s.append(bench.load_copy(name))
        a = probe.sample()
        per_copy.append(own_bytes(b, a))
        if host_probe:
            ha = host_probe.sample().processes
            host_per_copy.append(sum(ha[p] for p in set(ha) - set(hb)))
        trace.append({"event": f"{name} loaded", "used": a.used, "own": per_copy[-1], "load_s": load_s[-1]})
    after = probe.sample()

    mean_copy = int(statistics.fmean(per_copy))
    if bench.gpu_probe:
        baseline = max(0, start.used - bench.before_server.used)
    elif isinstance(probe, HostMemory):
        baseline = max(0, after.used - len(per_copy) * mean_copy)
    else:
        baseline = start.used
    return Memory(names, per_copy, host_per_copy, baseline, overhead, load_s, trace)


def _concurrently(bench: Bench, names: list[str], unload: bool = False) -> None:
    """Load (or unload) copies at once (Triton does them in parallel): they only need to be
    there, or gone; their times are not figures of the profile."""
    def load(name: str) -> None:
        client = MMEClient(bench.server.sagemaker_url)
        try:
            if unload:
                client.unload(name)
            else:
                url = bench.packaged.extract(bench.workdir / "models" / name)
                client.load(name, bench.server.model_url(url))
        finally:
            client.close()

    with unloading(bench.server_pid, names, bench.probe) if unload else nullcontext():
        in_threads(load, names)


def measure_timing(bench: Bench, names: list[str], progress: Callable[[str], None]) -> Timing:
    """Executions by batch size (binary bodies), the server's cost per request (JSON bodies,
    the reference's format) and closed-loop load, on one loaded copy."""
    opts, spec, mme, kserve = bench.options, bench.spec, bench.mme, bench.kserve
    batches = opts.batches or batch_sizes(spec.max_batch_size)
    if max(batches) > spec.max_batch_size:
        raise ConfigError(f"larger than the model's max batch {spec.max_batch_size}", field="--batches", value=batches)
    # one thread: the stub's CPU seconds are its time alone on a free core, whatever the neighbours do
    stub = (stub_pid(bench.server_pid, names[0]) if bench.server_pid and opts.device == "cpu"
            and bench.packaged.in_python and opts.threads == 1 else None)
    progress(f"a fresh copy's first {FIRST_EXECUTIONS} executions (batch 1, one at a time)")
    first = measure_first_executions(mme, kserve, names[0], spec)     # names[0] has not executed yet
    progress(f"timing executions at batch sizes {batches} (binary tensors"
             + (f", stopping once one takes {opts.stop_batch_s:g} s)" if opts.stop_batch_s and not opts.batches else ")"))
    service = measure_service(mme, kserve, names[0], spec, batches, repeats=opts.repeats,
                              stop_after_s=None if opts.batches else opts.stop_batch_s, stub=stub)
    timed = [p.batch for p in service]

    sized = [b for b in timed if len(spec.request_body(b)) <= MAX_JSON_BYTES] or timed[:1]
    json_batches = sorted({sized[0], sized[len(sized) // 2], sized[-1]})
    progress(f"the server's cost per request with JSON bodies of {json_batches} samples")
    server_pid = bench.server_pid if bench.packaged.in_python else None   # other backends execute in the server
    requests = measure_requests(mme, kserve, names[0], spec, json_batches, server_pid, opts.request_requests)
    per_byte, fixed, how = request_cost(requests)

    quick_batches = [p.batch for p in service if p.wall_s <= 0.1]
    load_batches = sorted({1, quick_batches[-1] if quick_batches else 1})
    progress(f"closed-loop load at concurrency {opts.concurrency}, batch sizes {load_batches}")
    load_points = measure_load(bench.server.sagemaker_url, kserve, names[0], spec, load_batches, opts.concurrency,
                               requests=opts.load_requests)

    warmth = []
    if stub and opts.warmth_s > 0:
        progress(f"Triton's compute time with requests paced {', '.join(f'{1000 * g:g}' for g in WARMTH_GAPS_S)} ms apart "
                 "(how cold a model that idled runs)")
        warmth = measure_warmth(mme, kserve, names[0], spec, bench.server_pid, stub, seconds=opts.warmth_s)
    output_bytes = len(mme.invoke(names[0], spec.request_body(1)).body)
    return Timing(service, requests, per_byte, fixed, how, load_points, [], 0, output_bytes, warmth, first)


def measure_copies_at_once(bench: Bench, timing: Timing, loaded: list[str], progress: Callable[[str], None]) -> list[str]:
    """k = 1, 2, 4, 8 copies executing at once (``timing.scaling``), on copies already loaded
    where there are enough (the max-models procedure leaves many), loading the rest.
    Returns the copies it loaded."""
    ks = sorted(set(bench.options.scaling))
    if len(ks) < 2:
        return []
    spec = bench.spec
    extra = [copy_name(spec.name, i) for i in range(len(loaded), max(ks))]
    if extra:
        progress(f"loading {len(extra)} more copies to run up to {max(ks)} at once")
        _concurrently(bench, extra)
    timing.scaling_batch = next((p.batch for p in timing.service if p.wall_s >= 0.02), timing.service[-1].batch)
    progress(f"total throughput of {ks} copies executing at once (batch {timing.scaling_batch})")
    timing.scaling = measure_scaling(bench.server.sagemaker_url, bench.kserve, loaded + extra, spec,
                                     timing.scaling_batch, ks)
    return extra


def unload_copies(bench: Bench, names: list[str], progress: Callable[[str], None],
                  timed: list[str] = ()) -> list[float]:
    """Unload copies: the others at once, then those in ``timed`` one by one, the last
    first (their seconds are returned)."""
    rest = [n for n in names if n not in timed]
    if rest:
        progress(f"unloading {len(rest)} copies")
        _concurrently(bench, rest, unload=True)
    seconds = []
    for name in reversed(timed):
        progress(f"unloading {name}")
        seconds.append(bench.unload(name))
    return seconds


def final_unload(bench: Bench, names: list[str], timed: list[str], memory: Memory,
                 progress: Callable[[str], None], keep: bool) -> list[float]:
    """Unload every copy once everything is measured. A server that fails here costs the
    trace's last event, not the calibration, when the profile has its unload time from
    elsewhere (``keep``): tritonserver 2.51 once died with signal 11 while answering 11
    unloads at once, after every figure had been taken."""
    try:
        seconds = unload_copies(bench, names, progress, timed=timed)
    except SERVER_FAILURES as exc:
        if not keep:
            raise
        progress(f"the server failed while unloading the copies at the end ({exc}); every figure was measured "
                 "before, so the calibration keeps them")
        memory.trace.append({"event": "final unload failed", "error": str(exc)[:300]})
        return []
    memory.trace.append({"event": "copies unloaded", "used": bench.probe.sample().used})
    return seconds


def calibrate(options: CalibrateOptions, progress: Callable[[str], None] = lambda msg: None,
              phase: Callable[[int, int, str], None] = lambda i, n, name: None) -> Calibration:
    """Run the whole measurement; ``progress`` hears what is happening, one line at a time,
    ``phase(i, n, name)`` each phase as it starts (for a bar with time left)."""
    options.check()
    load_average = [os.getloadavg()[0]]
    probe = options.device == "cpu" and options.placement_s > 0
    names = [*(["host placement"] if probe else []), "server", "memory", "timing", "working memory",
             *(["max models"] if options.max_models else []), "copies at once"]
    step = lambda name: phase(names.index(name), len(names), name)      # noqa: E731
    placed = None
    if probe:         # the host's scheduler, before the server's threads share it
        step("host placement")
        progress(f"how this host places woken threads: {options.placement_s:g} s of a scheduler probe, no Triton")
        placed = measure_placement(chain_s=options.placement_s, source="mmesim calibrate")
    with ExitStack() as stack:
        step("server")
        bench = start_bench(options, stack, progress)
        try:
            return _measure(options, bench, load_average, progress, step, placed)
        except SERVER_FAILURES as exc:       # before the server stops: its log goes with the error
            raise bench.server.failure("calibrating " + bench.spec.name, exc) from None


def _measure(options: CalibrateOptions, bench: Bench, load_average: list[float],
             progress: Callable[[str], None], step: Callable[[str], None],
             placed: WakePlacement | None = None) -> Calibration:
    """The measurements on a running bench, then the profile (the server is still up)."""
    step("memory")
    memory = measure_memory(bench, progress)
    step("timing")
    timing = measure_timing(bench, memory.names, progress)
    step("working memory")
    work = working.measure_bench(bench, [p.batch for p in timing.service], options.cycles, progress)
    loaded, max_models, unload_s = list(memory.names), None, []
    if options.max_models:
        step("max models")
        unload_s += unload_copies(bench, loaded, progress, timed=loaded)
        memory.trace.append({"event": "copies unloaded", "used": bench.probe.sample().used})
        progress(f"max models loaded: copies until (used + average) / total >= {options.threshold}")
        loader = mme_copy_loader(bench.mme, bench.packaged, bench.server, bench.workdir / "maxmodels",
                                 bench.spec.name)
        max_models = max_models_loaded(loader, bench.probe.sample, options.threshold, options.max_copies,
                                       on_step=lambda s: progress(
                                           f"  {s.models:>3} models: {s.used / MiB:,.0f} MiB of "
                                           f"{s.total / MiB:,.0f} MiB ({100 * s.fraction:.1f}%)"))
        loaded = [copy_name(bench.spec.name, i) for i in range(max_models.count)]
    step("copies at once")
    loaded += measure_copies_at_once(bench, timing, loaded, progress)
    version = bench.server.version
    unload_s += final_unload(bench, loaded, [] if options.max_models else memory.names, memory, progress,
                             keep=bool(work.cycles or unload_s))
    artifact_bytes = bench.packaged.artifact_bytes
    device = (f"{bench.gpu_probe.device} ({bench.gpu_probe.device_total / GiB:.1f} GiB)", bench.gpu_probe.driver,
              catalog_key(bench.gpu_probe.device, bench.gpu_probe.device_total)) if bench.gpu_probe else None
    load_average.append(os.getloadavg()[0])
    if work.cycles:                        # the model's own unload, not the server's polling
        unload_s = work.cycles.unload_s
    profile = assemble_profile(options, bench.spec, artifact_bytes, memory, timing, unload_s, max_models, version,
                               device, tuple(load_average), work, bench.packaged.in_python, placed)
    return Calibration(profile, memory.per_copy_bytes, memory.baseline_bytes, memory.process_overhead_bytes,
                       memory.host_per_copy_bytes, memory.load_s, unload_s, timing.service, timing.requests,
                       timing.load_points, timing.scaling, memory.trace, tuple(load_average), max_models, work,
                       timing.warmth, timing.first)


def assemble_profile(options: CalibrateOptions, spec, artifact_bytes: int, memory: Memory, timing: Timing,
                     unload_s: list[float], max_models: MaxModels | None, version: str | None,
                     device: tuple[str, str, str] | None, load_average: tuple[float, float],
                     work: working.Working | None = None, in_python: bool = False,
                     host_wakeups: WakePlacement | None = None) -> ModelProfile:
    """The measured figures as a ModelProfile, with notes saying how each was taken.

    On a GPU with the null model measured, per-copy device memory is the model's own and the
    one CUDA context goes to the baseline: what a native backend (libtorch, onnxruntime,
    TensorRT: one context per GPU) uses. On a CPU a copy keeps its whole process, as the
    Python backend that serves it here does."""
    mean_copy = int(statistics.fmean(memory.per_copy_bytes))
    if device:
        device_name, driver, gpu = device
        host_bytes = int(statistics.fmean(memory.host_per_copy_bytes)) if memory.host_per_copy_bytes else 0
    else:
        device_name, driver, gpu = f"cpu ({host_cpu()})", None, "cpu"
        host_bytes = mean_copy
    backend = {"python": "python", "pytorch": "pytorch_libtorch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
    served = "onnxruntime inside the python" if in_python and options.framework == "onnx" else backend[options.framework]
    overhead = memory.process_overhead_bytes
    own = max(0, mean_copy - overhead) if overhead is not None else mean_copy
    if device and overhead is not None:
        copy_bytes, baseline_bytes = own, memory.baseline_bytes + overhead
        valid = (f"gpu_memory_bytes is the model's own {own / MiB:.1f} MiB, valid for native backends (pytorch_libtorch, "
                 f"onnxruntime, tensorrt), whose one CUDA context ({overhead / MiB:.1f} MiB, null model) is in the "
                 f"baseline; served by the Python backend, each copy costs that much more")
    else:
        copy_bytes, baseline_bytes = mean_copy, memory.baseline_bytes
        valid = f"gpu_memory_bytes is a whole copy as the {served} backend holds it"
    notes = [f"per copy {mean_copy / MiB:.1f} MiB (copies: {', '.join(f'{b / MiB:.1f}' for b in memory.per_copy_bytes)} MiB)"]
    if overhead is not None:
        notes.append(f"of which the Python-backend process overhead (null model: interpreter, torch"
                     f"{', CUDA context' if device else ''}) is {overhead / MiB:.1f} MiB and the model's own "
                     f"{own / MiB:.1f} MiB")
    notes.append(valid)
    notes.append(f"baseline {baseline_bytes / MiB:.1f} MiB counted once ("
                 + ("device memory the server took before any model"
                    + (", plus one CUDA context" if baseline_bytes != memory.baseline_bytes else "") if device else
                    "server process and shared libraries: tree PSS minus copies") + ")")
    service = timing.service
    cpu_timed = bool(service[0].cpu_s)
    walls = ", ".join(f"{p.batch}: {p.wall_s * 1e3:.1f}" for p in service)
    notes.append("service: " + ("CPU seconds of the model's one-thread Python-backend process per execution (its time "
                                "alone on a free core); Triton's wall-clock compute ms by batch was " + walls
                                if cpu_timed else "compute_input+compute_infer+compute_output per execution from "
                                "Triton's statistics") + f"; binary tensor bodies at concurrency 1, batches "
                 f"{[p.batch for p in service]}" + (f" (larger ones extrapolated: batch {service[-1].batch} took "
                                                    f"over {options.stop_batch_s:g} s)"
                                                    if service[-1].batch < spec.max_batch_size else ""))
    notes.append("each batch size timed once warm (warm-ups until five executions' median stopped falling): "
                 + ", ".join(f"{p.batch}: {len(p.warmup_s)}" for p in service) + " warm-ups")
    if cpu_timed:
        notes.append(f"hand-off: {sequential_handoff_s(service) * 1e3:.3f} ms per execution (Triton's compute wall "
                     f"minus the stub's CPU, median at batch {service[0].batch}, one at a time)")
    notes.append(f"request cost: {timing.request_overhead_s * 1e3:.3f} ms per request + "
                 f"{timing.decode_s_per_byte * 1e9:.2f} ns per body byte ({timing.request_cost_how}, KServe v2 JSON "
                 f"bodies of {[p.body_bytes for p in timing.requests]} bytes)"
                 + (f"; the model's threads {timing.model_thread_s * 1e3:.3f} ms per execution beside it (threads "
                    "started since its stub, inside Triton's compute time)" if timing.model_thread_s else ""))
    if len(timing.scaling) > 1:
        notes.append("concurrent copies (batch %d): " % timing.scaling_batch + ", ".join(
            f"{s.concurrent} -> x{s.throughput:.2f} ({s.per_exec_s * 1e3:.1f} ms per execution)" for s in timing.scaling))
    one = service[0].batch == 1
    input_bytes = len(spec.request_body(1))      # the request the reference's clients sent (JSON)
    warmth = warmth_curve(timing.warmth, service[0] if one else None)
    if warmth:
        split = warmth[0].handoff_s is not None
        notes.append("host warmth: batch-1 requests paced "
                     + ", ".join(f"{1000 * p.gap_s:g} ms apart took {p.compute_s * 1e3:.2f} ms of Triton compute "
                                 f"({p.cpu_s * 1e3:.2f} ms of its CPU"
                                 + (f", {p.stub_cpu_s * 1e3:.2f} the stub's" if split else "")
                                 + f") at utilization {p.utilization:.2f}" for p in timing.warmth)
                     + (f"; the stub's CPU relative to the {service[0].mean_s * 1e3:.2f} ms of the service measurement, "
                        "and the hand-off (compute beyond it): " + ", ".join(
                            f"x{w.factor:.2f} + {w.handoff_s * 1e3:.2f} ms after {1000 * w.idle_s:g} ms idle"
                            for w in warmth) if split
                        else f"; relative to the {service[0].wall_s * 1e3:.2f} ms of the service measurement: "
                        + ", ".join(f"x{w.factor:.2f} after {1000 * w.idle_s:g} ms idle" for w in warmth)))
        if warmth[0].cv is not None:
            each = [p for p in timing.warmth if p.handoff_each_s]
            notes.append("spread (cv of a gamma with the measured mean and 95th percentile) of the stub's CPU and the "
                         f"hand-off: {warmth[-1].cv:.3f} and {warmth[-1].handoff_cv:.3f} after "
                         f"{', '.join(f'{1000 * p.gap_s:g}' for p in each)} ms idle (each execution read in the pause "
                         f"after it; {sum(len(p.handoff_each_s) for p in each)} pooled, each relative to its pause's "
                         "mean); " + ", ".join(f"{w.cv:.3f} and {w.handoff_cv:.3f} after {1000 * w.idle_s:g} ms"
                                               for w in warmth[:len(warmth) - len(each)])
                         + f" (the stub's CPU from that pause's executions, the hand-off from the "
                         f"{len(service[0].cpu_s)} timed batch-1 ones)")
        if warmth[0].frontend_s is not None:
            notes.append("the server's CPU per request after each pause, by thread (front end; the model's threads): "
                         + ", ".join(f"{w.frontend_s * 1e3:.3f}; {w.model_thread_s * 1e3:.3f} ms after "
                                     f"{1000 * w.idle_s:g} ms" for w in warmth)
                         + f" (JSON requests of {input_bytes} bytes; the request cost's figure at batch 1: "
                         f"{(timing.request_overhead_s + timing.decode_s_per_byte * input_bytes) * 1e3:.3f}"
                         f"; {timing.model_thread_s * 1e3:.3f} ms)")
    first = first_extra_s(timing.first, service[0].wall_s) if one else []
    if timing.first:
        notes.append(f"first executions of a fresh copy (batch 1, one at a time): "
                     + ", ".join(f"{s * 1e3:.2f}" for s in timing.first)
                     + f" ms of Triton compute against {service[0].wall_s * 1e3:.2f} ms steady"
                     + (f": {len(first)} took longer" if first else ": none took longer"))
    notes.append(f"machine load average {load_average[0]:.1f} at the start, {load_average[1]:.1f} at the end, on "
                 f"{host_cores()} cores")
    if host_wakeups:
        notes.append("host placement (scheduler probe before the server started): "
                     + placement_text(host_wakeups.model_dump()))
    if max_models:
        notes.append(f"max models loaded at threshold {max_models.threshold}: {max_models.count} "
                     f"({max_models.stopped_by})")
    two = next((s for s in timing.scaling if s.concurrent == 2), None)
    return ModelProfile(
        name=f"{spec.name}-{options.framework}-{gpu}",
        model=spec.name,
        framework=options.framework,
        gpu=gpu,
        artifact_bytes=artifact_bytes,
        gpu_memory_bytes=copy_bytes,
        baseline_gpu_bytes=baseline_bytes,
        host_memory_bytes=host_bytes,
        load_s=statistics.fmean(memory.load_s),
        unload_s=statistics.fmean(unload_s),
        service=[BatchTiming(batch=p.batch, seconds=p.mean_s, cv=round(p.cv, 4)) for p in service],
        input_bytes=input_bytes,
        output_bytes=timing.output_bytes,
        decode_s_per_byte=timing.decode_s_per_byte,
        request_overhead_s=timing.request_overhead_s,
        model_thread_s=round(timing.model_thread_s, 6),
        cpu_threads=options.threads,
        handoff_s=sequential_handoff_s(service),
        host_warmth=warmth,
        host_wakeups=host_wakeups,
        first_executions_s=first,
        gpu_overlap=round(min(1.0, max(0.0, two.throughput - 1)), 3) if two else 0.0,
        concurrency_scaling=[Scaling(concurrent=s.concurrent, throughput=round(s.throughput, 3))
                             for s in timing.scaling] if len(timing.scaling) > 1 else [],
        working_memory=[WorkingMemory(batch=p.batch, bytes=p.bytes) for p in work.points] if work else [],
        leak_bytes_per_unload=work.cycles.leak_per_cycle if work and work.cycles else 0,
        memory_source=working.summary_notes(work) if work else None,
        triton=TritonConfig(max_batch_size=spec.max_batch_size, dynamic_batching=True,
                            preferred_batch_sizes=list(spec.preferred_batch_sizes), max_queue_delay_s=0.0,
                            instance_count=1),
        provenance=Provenance(
            method="measured",
            source=f"mmesim calibrate: Triton {version} ({options.runner} runner), {served} backend",
            date=dt.date.today().isoformat(), device=device_name, driver=driver, triton_version=version,
            host_cpu=host_cpu(), command=options.command, notes="; ".join(notes)),
    )
