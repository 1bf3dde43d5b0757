"""`mmesim calibrate`: package a model, run it in a real Triton, measure it, and write the
ModelProfile the simulator reads (plus a report with every trace behind the numbers)."""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mmesim.calibrate.latency import (LoadPoint, ServicePoint, batch_sizes, decode_cost, measure_load,
                                      measure_overlap, measure_service)
from mmesim.calibrate.maxmodels import MaxModels, copy_name, max_models_loaded, mme_copy_loader
from mmesim.calibrate.memory import ContainerMemory, HostMemory, MemorySample, NvmlMemory, cuda_index, parse_bytes
from mmesim.catalog import host_cpu
from mmesim.errors import ConfigError, MissingPiece
from mmesim.profile import BatchTiming, ModelProfile, Provenance, TritonConfig
from mmesim.triton.client import MMEClient, kserve_client
from mmesim.triton.packaging import FRAMEWORKS, package, package_null

MiB = 2**20


@dataclass
class CalibrateOptions:
    model: str
    framework: str = "python"
    device: str = "cpu"                       # cpu | cuda | cuda:N
    runner: str = "local"                     # local | docker
    copies: int = 2                           # copies loaded to measure per-copy memory and overlap
    max_models: bool = False
    threshold: float = 0.9
    memory_budget: str | int | None = None    # CPU only: the "total" of the max-models rule
    max_copies: int = 200
    inputs: list[str] | None = None
    max_batch: int | None = None
    batches: list[int] | None = None          # default: 1, 2, 4, ... max batch
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4])
    repeats: int = 5
    load_requests: int = 12
    cpu_threads: int | None = None            # torch threads per Python-backend instance (default: torch's)
    measure_overhead: bool = True             # load the null model to split process overhead from the model
    image: str | None = None                  # docker runner
    binary: str | None = None                 # local runner
    workdir: str | None = None
    command: str | None = None                # for provenance

    def check(self) -> None:
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
        if self.framework == "tensorrt" and self.device == "cpu":
            raise MissingPiece("TensorRT engines run only on an NVIDIA GPU: use --device cuda on a GPU host, or "
                               "--framework python|pytorch|onnx on CPU")


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
    decode_fixed_s: float
    load_points: list[LoadPoint]
    overlap: tuple[float, float, float] | None
    memory_trace: list[dict]
    max_models: MaxModels | None = None

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


def catalog_key(device_name: str, total_bytes: int) -> str:
    """The catalogue GPU an NVML device name refers to (A100 40/80 GB told apart by memory)."""
    from mmesim.catalog import load_catalog
    gpus = load_catalog().gpus
    matches = [g for k, g in gpus.items() if re.search(rf"\b{re.escape(k.split('-')[0])}\b", device_name, re.I)]
    if not matches:
        return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    return min(matches, key=lambda g: abs(g.memory_gib * 2**30 - total_bytes)).key


def _server(options: CalibrateOptions, workdir: Path):
    if options.runner == "docker":
        from mmesim.triton.docker import CALIBRATION_IMAGE, DockerTriton
        return DockerTriton(workdir, image=options.image or CALIBRATION_IMAGE, device=options.device)
    from mmesim.triton.local import LocalTriton
    server = LocalTriton(binary=options.binary, workdir=workdir / "server")
    server.installation.require_backend(options.framework)
    if options.device != "cpu" and server.installation.bundled:
        raise MissingPiece("the tritonserver bundled with nvidia-pytriton is built without GPU support here; on a GPU "
                           "host use --runner docker, or run inside the calibration image (containers/README.md)")
    return server


def calibrate(options: CalibrateOptions, progress: Callable[[str], None] = lambda msg: None) -> Calibration:
    """Run the whole measurement; ``progress`` hears what is happening, one line at a time."""
    options.check()
    budget = parse_bytes(options.memory_budget)
    with ExitStack() as stack:
        if options.workdir:
            workdir = Path(options.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmesim-calibrate-")))
        gpu_probe = NvmlMemory(cuda_index(options.device)) if options.device != "cpu" else None

        server = _server(options, workdir)     # finds binary / engine and backend before slow work

        progress(f"packaging {options.model} for the {options.framework} backend")
        packaged = package(options.model, options.framework, workdir / "artifact", device=options.device,
                           inputs=options.inputs, max_batch_size=options.max_batch,
                           cpu_threads=options.cpu_threads)
        spec = packaged.spec
        artifact_bytes = packaged.artifact_bytes
        null = package_null(workdir / "null-artifact", options.device) if (
            options.measure_overhead and options.framework == "python") else None

        before_server = gpu_probe.sample() if gpu_probe else None
        progress(f"starting tritonserver ({options.runner})")
        stack.enter_context(server)
        mme = MMEClient(server.sagemaker_url)
        stack.callback(mme.close)
        kserve = kserve_client(server.http_url)
        stack.callback(kserve.close)
        if gpu_probe:
            probe = gpu_probe
        elif options.runner == "docker":
            probe = ContainerMemory(server, budget)
        else:
            probe = HostMemory(server.pid, budget)
        server_pid = getattr(server, "pid", None)

        def own_bytes(before: MemorySample, after: MemorySample) -> int:
            """What one load added: new processes' own pages plus the server's growth (CPU),
            or the device's used-memory growth (GPU, container)."""
            if isinstance(probe, HostMemory):
                new = set(after.processes) - set(before.processes)
                grown = after.processes.get(server_pid, 0) - before.processes.get(server_pid, 0)
                return sum(after.processes[p] for p in new) + max(0, grown)
            return after.used - before.used

        def host_own(before: dict[int, int], after: dict[int, int]) -> int:
            new = set(after) - set(before)
            return sum(after[p] for p in new)

        host_probe = HostMemory(server_pid, budget) if (gpu_probe and server_pid) else None

        trace: list[dict] = []
        start = probe.sample()
        baseline_gpu = (start.used - before_server.used) if gpu_probe else None
        trace.append({"event": "server ready", "used": start.used})

        overhead = None
        if null is not None:
            progress("measuring the Python backend's per-process overhead (null model)")
            b = probe.sample()
            mme.load("mmesim-null", server.model_url(null.extract(workdir / "models" / "mmesim-null")))
            a = probe.sample()
            overhead = own_bytes(b, a)
            trace.append({"event": "null model loaded", "used": a.used, "own": overhead})
            mme.unload("mmesim-null")

        names = [copy_name(spec.name, i) for i in range(options.copies)]
        per_copy, host_per_copy, load_s = [], [], []
        for name in names:
            progress(f"loading {name}")
            url = packaged.extract(workdir / "models" / name)
            b = probe.sample()
            hb = host_probe.sample().processes if host_probe else None
            load_s.append(mme.load(name, server.model_url(url)))
            a = probe.sample()
            per_copy.append(own_bytes(b, a))
            if host_probe:
                host_per_copy.append(host_own(hb, host_probe.sample().processes))
            trace.append({"event": f"{name} loaded", "used": a.used, "own": per_copy[-1], "load_s": load_s[-1]})
        after_copies = probe.sample()

        batches = options.batches or batch_sizes(spec.max_batch_size)
        if max(batches) > spec.max_batch_size:
            raise ConfigError(f"larger than the model's max batch {spec.max_batch_size}", field="--batches",
                              value=batches)
        progress(f"timing executions at batch sizes {batches}")
        service = measure_service(mme, kserve, names[0], spec, batches, repeats=options.repeats)
        decode_per_byte, decode_fixed = decode_cost(service)

        progress(f"closed-loop load at concurrency {options.concurrency}")
        load_batches = sorted({1, batches[len(batches) // 2], batches[-1]})
        load_points = measure_load(server.sagemaker_url, kserve, names[0], spec, load_batches, options.concurrency,
                                   requests=options.load_requests)

        overlap = None
        if len(names) >= 2:
            progress("measuring how concurrent executions of two models slow each other")
            overlap = measure_overlap(server.sagemaker_url, kserve, names[:2], spec,
                                      batch=min(8, spec.max_batch_size))

        output_bytes = len(mme.invoke(names[0], spec.request_body(1)).body)
        unload_s = []
        for name in reversed(names):
            progress(f"unloading {name}")
            unload_s.append(mme.unload(name))
        trace.append({"event": "copies unloaded", "used": probe.sample().used})

        max_models = None
        if options.max_models:
            progress(f"max models loaded: copies until (used + average) / total >= {options.threshold}")
            loader = mme_copy_loader(mme, packaged, server, workdir / "maxmodels", spec.name)
            max_models = max_models_loaded(loader, probe.sample, options.threshold, options.max_copies,
                                           on_step=lambda s: progress(
                                               f"  {s.models:>3} models: {s.used / MiB:,.0f} MiB of "
                                               f"{s.total / MiB:,.0f} MiB ({100 * s.fraction:.1f}%)"))
            for i in reversed(range(max_models.count)):
                unload_s.append(mme.unload(copy_name(spec.name, i)))

        version = server.version
    # server stopped, work folder removed

    n = len(per_copy)
    mean_copy = int(statistics.fmean(per_copy))
    if gpu_probe:
        baseline = max(0, baseline_gpu)
        device, driver, gpu = gpu_probe.device, gpu_probe.driver, catalog_key(gpu_probe.device, gpu_probe.total)
        host_bytes = int(statistics.fmean(host_per_copy)) if host_per_copy else 0
    else:
        baseline = max(0, after_copies.used - n * mean_copy) if isinstance(probe, HostMemory) else start.used
        device, driver, gpu = f"cpu ({host_cpu()})", None, "cpu"
        host_bytes = mean_copy
    backend = {"python": "python", "pytorch": "pytorch_libtorch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
    notes = [f"per copy {mean_copy / MiB:.1f} MiB (copies: {', '.join(f'{b / MiB:.1f}' for b in per_copy)} MiB)"]
    if overhead is not None:
        notes.append(f"of which the Python-backend process overhead (null model: interpreter, torch"
                     f"{', CUDA context' if gpu_probe else ''}) is {overhead / MiB:.1f} MiB and the model's own "
                     f"{max(0, mean_copy - overhead) / MiB:.1f} MiB; other backends share the server's context, so "
                     f"for them count only the model's own bytes")
    notes.append(f"baseline {baseline / MiB:.1f} MiB counted once ("
                 + ("device memory the server took before any model" if gpu_probe else
                    "server process and shared libraries: tree PSS minus copies") + ")")
    notes.append(f"service: compute_input+compute_infer+compute_output per execution from Triton's statistics at "
                 f"concurrency 1; decode: round trip minus Triton's request time, fitted per request byte "
                 f"(fixed part {decode_fixed * 1e3:.2f} ms)")
    if overlap:
        notes.append(f"overlap: execution {overlap[1] * 1e3:.1f} ms alone, {overlap[2] * 1e3:.1f} ms with a second "
                     f"model running")
    if max_models:
        notes.append(f"max models loaded at threshold {max_models.threshold}: {max_models.count} "
                     f"({max_models.stopped_by})")
    profile = ModelProfile(
        name=f"{spec.name}-{options.framework}-{gpu}",
        model=spec.name,
        framework=options.framework,
        gpu=gpu,
        artifact_bytes=artifact_bytes,
        gpu_memory_bytes=mean_copy,
        baseline_gpu_bytes=baseline,
        host_memory_bytes=host_bytes,
        load_s=statistics.fmean(load_s),
        unload_s=statistics.fmean(unload_s),
        service=[BatchTiming(batch=p.batch, seconds=p.mean_s, cv=round(p.cv, 4)) for p in service],
        input_bytes=len(spec.request_body(1)),
        output_bytes=output_bytes,
        decode_s_per_byte=decode_per_byte,
        gpu_overlap=round(overlap[0], 3) if overlap else 0.0,
        triton=TritonConfig(max_batch_size=spec.max_batch_size, dynamic_batching=True,
                            preferred_batch_sizes=list(spec.preferred_batch_sizes), max_queue_delay_s=0.0,
                            instance_count=1),
        provenance=Provenance(
            method="measured",
            source=f"mmesim calibrate: Triton {version} ({options.runner} runner), {backend[options.framework]} backend",
            date=dt.date.today().isoformat(), device=device, driver=driver, triton_version=version,
            host_cpu=host_cpu(), command=options.command, notes="; ".join(notes)),
    )
    return Calibration(profile, per_copy, baseline, overhead, host_per_copy, load_s, unload_s, service, decode_fixed,
                       load_points, overlap, trace, max_models)
