"""`make gpu-check`: on any NVIDIA host, in minutes, what mmesim can measure there. It reads
NVML, calibrates resnet50 and bert-base-uncased on cuda:0 in every framework this host can
serve (k = 1, 2, 4, 8 copies at once, max-models under a memory cap so a large GPU stays
fast), writes the profiles and one JSON report, and checks that no process or shared-memory
region is left behind. For the Python backend the models also log each execution
(mmesim.triton.execlog): per batch, the host's part (until PyTorch's call returns with the
kernels launched) and the wait for the GPU, measured, which one GPU's published rows cannot
tell apart. ``--device cpu`` is the same check as a dry run with tiny models.

    python -m mmesim.calibrate.gpu_check --device cuda:0 --out out/gpu-check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmesim.calibrate.memory import NvmlMemory, cuda_index, parse_bytes
from mmesim.calibrate.run import CalibrateOptions, calibrate, catalog_key
from mmesim.catalog import host_cpu
from mmesim.errors import ConfigError, MmesimError
from mmesim.triton import execlog
from mmesim.units import GiB, MiB


@dataclass
class Plan:
    """What the check runs: models, their per-run settings, and the limits."""

    device: str
    models: list[str]
    memory_cap: str
    max_copies: int
    scaling: list[int]
    time_limit_s: float
    batches: list[int] | None = None
    repeats: int = 3
    concurrency: list[int] = field(default_factory=lambda: [1, 4])
    cpu_threads: int | None = None
    copies: int = 2
    cycles: int = 2                  # load/unload cycles (working memory, leak, the model's own unload)

    @classmethod
    def for_device(cls, device: str, time_limit_s: float) -> "Plan":
        if device == "cpu":      # the dry run: tiny models, small caps, one thread per copy
            return cls(device, ["tiny-bert"], "500MiB", 3, [1, 2], time_limit_s, batches=[1, 4], repeats=2,
                       concurrency=[1], cpu_threads=1, copies=1, cycles=1)
        # a Python-backend copy on a GPU holds its own CUDA context (hundreds of MiB): 6 GiB and
        # 12 copies keep max-models to a minute or two per run, however large the GPU
        return cls(device, ["resnet50", "bert-base-uncased"], "6GiB", 12, [1, 2, 4, 8], time_limit_s)

    def options(self, model: str, framework: str, exec_log: str | None = None) -> CalibrateOptions:
        return CalibrateOptions(model=model, framework=framework, device=self.device, max_models=True, copies=self.copies,
                                memory_budget=self.memory_cap, max_copies=self.max_copies, scaling=list(self.scaling),
                                batches=self.batches, repeats=self.repeats, concurrency=list(self.concurrency),
                                cpu_threads=self.cpu_threads, stop_batch_s=0.5, request_requests=2, load_requests=6,
                                cycles=self.cycles, exec_log=exec_log,
                                command=f"mmesim.calibrate.gpu_check --device {self.device} (model {model}, "
                                        f"framework {framework})")


def read_nvml(device: str) -> dict | None:
    """The GPU as NVML names it: what the profiles will say they were measured on."""
    if device == "cpu":
        return None
    gpu = NvmlMemory(cuda_index(device))
    used = gpu.sample().used
    return {"index": gpu.index, "name": gpu.device, "memory_total_bytes": gpu.device_total,
            "memory_used_bytes_at_start": used, "driver": gpu.driver,
            "catalogue_gpu": catalog_key(gpu.device, gpu.device_total)}


def frameworks(device: str, binary: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The frameworks this host can serve on ``device``, and why each other one is left out."""
    from mmesim.triton.local import find_tritonserver
    backends = set(find_tritonserver(binary).available_backends)
    ok, skipped = [], {}

    def importable(name: str) -> bool:
        try:
            __import__(name)
            return True
        except ImportError:
            return False

    if "python" in backends:
        ok.append("python")
    else:
        skipped["python"] = "this tritonserver has no python backend"
    if "pytorch" in backends:
        ok.append("pytorch")
    else:
        skipped["pytorch"] = "no pytorch (libtorch) backend in this tritonserver (NVIDIA's image has one)"
    if "onnxruntime" in backends:
        ok.append("onnx")
    elif "python" in backends and importable("onnxruntime"):
        import onnxruntime
        if device == "cpu" or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            ok.append("onnx")
        else:
            skipped["onnx"] = (f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider: "
                               "pip install onnxruntime-gpu")
    else:
        skipped["onnx"] = "neither an onnxruntime backend nor the onnxruntime package (pip install onnxruntime)"
    if device == "cpu":
        skipped["tensorrt"] = "TensorRT runs only on an NVIDIA GPU"
    elif "tensorrt" not in backends:
        skipped["tensorrt"] = "no tensorrt backend in this tritonserver (NVIDIA's image has one)"
    elif not importable("tensorrt"):
        skipped["tensorrt"] = "the tensorrt package is missing (pip install tensorrt, the server's version)"
    else:
        ok.append("tensorrt")
    return ok, skipped


def _shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _orphaned(regions: set[str]) -> list[str]:
    """The regions of servers this process started (named by our pid) that no running
    process maps: left behind by this check. Regions of other servers on the host (another
    user's, or one killed a moment ago and not yet swept) are not this check's to judge."""
    from mmesim.triton.local import SHM_PREFIX
    regions = {r for r in regions if r.startswith(f"{SHM_PREFIX}_{os.getpid()}_")}
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.rsplit("/dev/shm/", 1)[1].split(" ")[0] for line in maps.read_text().splitlines()
                          if "/dev/shm/" in line)
        except (OSError, IndexError):
            pass
    return sorted(r for r in regions if r not in mapped and os.path.exists(f"/dev/shm/{r}"))


def _children() -> list[dict]:
    """This process's descendants (a server it started and did not stop would be one)."""
    import psutil
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            out.append({"pid": p.pid, "name": p.name()})
        except psutil.Error:
            pass
    return out


def run_check(plan: Plan, out: Path, only: list[str] | None = None, log=print) -> dict:
    """Every model in every framework available, within the time limit; the report as a dict."""
    started, shm_before, children_before = time.monotonic(), _shm(), {c["pid"] for c in _children()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "profiles").mkdir(exist_ok=True)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": plan.device,
              "host_cpu": host_cpu(), "gpu": read_nvml(plan.device), "memory_cap": plan.memory_cap,
              "python": sys.version.split()[0], "runs": []}
    import numpy
    import torch
    report["torch"], report["numpy"] = torch.__version__, numpy.__version__
    available, skipped = frameworks(plan.device)
    if only:
        skipped.update({f: "not asked for (--frameworks)" for f in available if f not in only})
        available = [f for f in available if f in only]
    report["frameworks"], report["skipped_frameworks"] = available, skipped
    log(f"frameworks: {', '.join(available) or 'none'}" + "".join(f"\n  left out {k}: {v}" for k, v in skipped.items()))
    for model in plan.models:
        for framework in available:
            run = {"model": model, "framework": framework}
            report["runs"].append(run)
            if time.monotonic() - started > plan.time_limit_s:
                run["skipped"] = f"time limit of {plan.time_limit_s:.0f} s reached"
                continue
            t0 = time.monotonic()
            log(f"calibrating {model} ({framework}) on {plan.device}")
            executions = out / "executions" / f"{model}-{framework}" if framework == "python" else None
            if executions:
                shutil.rmtree(executions, ignore_errors=True)
                executions.mkdir(parents=True)
            try:
                result = calibrate(plan.options(model, framework, executions and str(executions)),
                                   lambda m: log("  " + m))
            except MmesimError as exc:
                run["error"] = str(exc)
                log(f"  failed: {str(exc).splitlines()[0]}")
                continue
            finally:
                run["seconds"] = round(time.monotonic() - t0, 1)
            p = result.profile
            path = out / "profiles" / f"{p.name}.json"
            p.save(path)
            result.save_report(out / "profiles" / f"{p.name}.calibration.json")
            run.update({"profile": str(path), "gpu_memory_mib": round(p.gpu_memory_bytes / MiB, 1),
                        "baseline_mib": round(p.baseline_gpu_bytes / MiB, 1),
                        "process_overhead_mib": (round(result.process_overhead_bytes / MiB, 1)
                                                 if result.process_overhead_bytes is not None else None),
                        "service_ms": {t.batch: round(t.seconds * 1e3, 3) for t in p.service},
                        "scaling": {s.concurrent: s.throughput for s in p.concurrency_scaling},
                        "max_models": result.max_models.count if result.max_models else None,
                        "max_models_stopped_by": result.max_models.stopped_by if result.max_models else None})
            if executions:      # executions alone, by batch: the host's part and the device's
                run["executions"] = execlog.by_items(execlog.read(executions))
    report["leftover_processes"] = [c for c in _children() if c["pid"] not in children_before]
    report["leftover_shm"] = _orphaned(_shm() - shm_before)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["ok"] = (bool(available) and all("profile" in r or "skipped" in r for r in report["runs"])
                    and not report["leftover_processes"] and not report["leftover_shm"])
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmesim.calibrate.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0", help="cuda:N, or cpu for the dry run (default cuda:0)")
    parser.add_argument("--out", default="out/gpu-check", help="folder for report.json and profiles/")
    parser.add_argument("--models", help="comma-separated (default resnet50,bert-base-uncased; cpu: tiny-bert)")
    parser.add_argument("--frameworks", help="comma-separated subset of those available (default: all of them)")
    parser.add_argument("--memory-cap", help="the max-models rule's total (default 6GiB; cpu: 500MiB)")
    parser.add_argument("--time-limit-s", type=float, default=420.0,
                        help="no new calibration starts after this many seconds (420)")
    args = parser.parse_args(argv)
    try:
        if args.device != "cpu":
            cuda_index(args.device)
        plan = Plan.for_device(args.device, args.time_limit_s)
        if args.models:
            plan.models = [m.strip() for m in args.models.split(",") if m.strip()]
        if args.memory_cap:
            parse_bytes(args.memory_cap, "--memory-cap")
            plan.memory_cap = args.memory_cap
        if args.time_limit_s <= 0:
            raise ConfigError("must be positive", field="--time-limit-s", value=args.time_limit_s)
        only = [f.strip() for f in args.frameworks.split(",")] if args.frameworks else None
        report = run_check(plan, Path(args.out), only, log=lambda m: print(m, file=sys.stderr, flush=True))
    except MmesimError as exc:
        print(f"gpu-check: error: {exc}", file=sys.stderr)
        return 2
    gpu = report["gpu"]
    where = f"GPU {gpu['name']} ({gpu['memory_total_bytes'] / GiB:.1f} GiB)" if gpu else "CPU dry run"
    print(f"{where}: "
          f"{sum('profile' in r for r in report['runs'])} of {len(report['runs'])} calibrations in "
          f"{report['seconds']:.0f} s; report {Path(args.out) / 'report.json'}"
          + ("" if report["ok"] else " -- NOT OK: see the report"))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
