"""Built-in profiles derived from the published MME-on-GPU load test (the AWS blog; its
results are copied in mmesim/derive/reference/), by code, not by hand.

From each results.csv row (model x framework x instance) the derivation works out:
- memory: the reference stopped loading copies once (used + used/N) / total >= 0.90.
  Its T4 trace (8.02 % of 15109 MiB after the first copy, +268 MiB a copy) gives the
  fixed baseline; with it, "max models loaded" = N pins the per-copy bytes to an interval,
  and we take its middle. Re-running the procedure on the simulated instance gives N back.
- the load generator (shared by all rows): 6 Locust workers; a CV request's client CPU is
  set so the workers' ceiling sits 10 % above the highest CV throughput published (the
  README explains why that throughput is partly the generator's own ceiling).
- decoding (per instance type): what the lowest CV latency has on top of the lowest NLP
  latency on that instance, less the client's share, is server-side payload handling.
- execution time and overload limit (per row): the batch-1 time and the per-extra-item
  time of Triton's executions are fitted with the simulator until the reference's latency
  and throughput come out within 1 %; then the in-flight limit beyond which the instance
  sheds load is placed midway between the peak in flight met in the last clean step and
  that met in the first failing one, so the onset of failures lands on the published step.
- host-bound and GPU parts (per row, ``split``): of the batch-1 time and of a busy item's
  time, from the model's FLOPs and the FLOP rate attainable on that row's own GPU (the best
  any of its rows reached), so that translation to another GPU needs no other GPU's rows.
Everything not in the reference (load and unload time) follows a documented rule and is
marked as such in the provenance. ``derive_all(gpus=["T4"])`` derives from one GPU's rows
alone (mmesim.derive.leave_one_out).

Run ``python -m mmesim.derive.blog --write`` to regenerate mmesim/profiles/*.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from mmesim.catalog import load_catalog
from mmesim.endpoint import EndpointConfig
from mmesim.profile import ModelProfile, builtin_dir
from mmesim.results.summary import history, reference_metrics
from mmesim.sim.mme import Simulation
from mmesim.derive.architectures import WORKING_SOURCE, gpu_work, working_estimate
from mmesim.sim.translate import busy_batch, gpu_seconds
from mmesim.units import MiB
from mmesim.workload import LoadGenerator, builtin_workloads, load_workload

SOURCE = "AWS ML blog 'Achieve high performance at scale for model serving using Amazon SageMaker MME with GPU' (2023), results.csv"
GPU_KEYS = {"T4": "t4", "A10G": "a10g", "V100": "v100"}
TRACE_FIRST_SHARE, TRACE_STEP_MIB, TRACE_TOTAL_MIB = 0.0802, 268, 15109   # reference README, T4 trace
WORKERS, CLIENT_PER_REQUEST_S, CEILING_MARGIN = 6, 0.002, 1.10
SERVICE_CV = 0.10             # spread of execution times (not published; a typical GPU figure)
LOAD_FIXED_S, LOAD_BYTES_PER_S = 1.0, 200e6   # not published: load = 1 s + artifact at 200 MB/s
UNLOAD_S = 0.5
MAX_ITERATIONS = 10
TOLERANCE = 0.01              # |log(simulated / published)| for latency and throughput
THETA_MAX = 51.0


def concurrency(theta: float) -> tuple[float, float]:
    """One knob for how much work a busy GPU gets done, as (per-extra-item share of the
    batch-1 time, gpu_overlap). theta 0: batching gains nothing and executions serialise;
    up to 1: batching gets better, down to each extra item costing half the batch-1 time
    (typical of a GPU already busy at batch 1); beyond 1: executions of different copies
    also overlap, 0.02 per unit, up to 1 at theta 51."""
    theta = min(max(theta, 0.0), THETA_MAX)
    if theta <= 1.0:
        return 1.0 - 0.5 * theta, 0.0
    return 0.5, min(1.0, 0.02 * (theta - 1.0))
TRITON = {"pytorch": {"max_batch_size": 32, "preferred_batch_sizes": [16]},
          "tensorrt": {"max_batch_size": 12, "preferred_batch_sizes": [12]}}


def reference_rows(gpus: list[str] | None = None) -> list[dict]:
    """The published rows, or those of the named GPUs (e.g. ["T4"])."""
    text = resources.files(__package__).joinpath("reference/mme-gpu-blog-results.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    for r in rows:
        for k in ("params_millions", "size_on_disk_mb", "gpu_memory_gib", "max_models_loaded", "latency_ms",
                  "throughput_qps", "max_concurrent_users"):
            r[k] = float(r[k]) if "." in r[k] else int(r[k])
    return [r for r in rows if gpus is None or r["gpu"] in gpus]


def profile_name(row: dict) -> str:
    return f"{row['model']}-{row['framework']}-{GPU_KEYS[row['gpu']]}"


def payload_bytes(use_case: str) -> int:
    """Bytes of the reference's KServe v2 JSON request: FP32 [1,3,224,224] image or two
    INT32 [1,128] token tensors, serialised the way the reference's client did (json.dumps)."""
    rng = np.random.default_rng(0)
    if use_case == "cv":
        inputs = [{"name": "INPUT__0", "shape": [1, 3, 224, 224], "datatype": "FP32",
                   "data": rng.random(3 * 224 * 224, dtype=np.float32).tolist()}]
    else:
        inputs = [{"name": f"INPUT__{i}", "shape": [1, 128], "datatype": "INT32",
                   "data": rng.integers(0, 30000, 128).tolist()} for i in range(2)]
    return len(json.dumps({"inputs": inputs}).encode())


def baseline_bytes() -> int:
    return int((TRACE_FIRST_SHARE * TRACE_TOTAL_MIB - TRACE_STEP_MIB) * MiB)


def per_copy_bytes(n: int, total: int, baseline: int, threshold: float = 0.90) -> int:
    """The middle of the per-copy sizes m for which the reference's loop stops at exactly n:
    (B + n m)(n + 1)/n >= threshold T  and  (B + (n-1) m) n/(n-1) < threshold T."""
    lo = (threshold * total * n / (n + 1) - baseline) / n
    hi = (threshold * total * (n - 1) / n - baseline) / (n - 1) if n > 1 else float("inf")
    if not math.isfinite(hi):
        hi = lo * 1.5
    return int((lo + hi) / 2)


def generator(rows: list[dict] | None = None) -> LoadGenerator:
    """The reference's load generator, its CV ceiling set from ``rows`` (default: all)."""
    rows = rows if rows is not None else reference_rows()
    ceiling = CEILING_MARGIN * max(r["throughput_qps"] for r in rows if r["use_case"] == "cv")
    per_byte = (WORKERS / ceiling - CLIENT_PER_REQUEST_S) / payload_bytes("cv")
    return LoadGenerator(workers=WORKERS, cpu_s_per_request=CLIENT_PER_REQUEST_S, cpu_s_per_byte=float(f"{per_byte:.4g}"))


def decode_per_byte(instance_type: str, gen: LoadGenerator) -> float:
    rows = [r for r in reference_rows() if r["instance_type"] == instance_type]
    cv = min(r["latency_ms"] for r in rows if r["use_case"] == "cv")
    nlp = min(r["latency_ms"] for r in rows if r["use_case"] == "nlp")
    cv_bytes, nlp_bytes = payload_bytes("cv"), payload_bytes("nlp")
    client = gen.cpu_s_per_byte * (cv_bytes - nlp_bytes)
    return max(0.0, ((cv - nlp) / 1000.0 - client) / (cv_bytes - nlp_bytes))


@dataclass
class Fit:
    profile: ModelProfile
    latency_ms: float
    throughput_qps: float
    max_concurrent_users: int | None
    iterations: int


def _metrics(run, steps: list[int]) -> dict:
    return reference_metrics(history(run, percentiles=False), steps)


def fit_row(row: dict, gen: LoadGenerator, seed: int = 0, verbose: bool = False) -> Fit:
    catalog = load_catalog()
    gpu = catalog.gpu(GPU_KEYS[row["gpu"]])
    itype = catalog.instance(row["instance_type"])
    base = baseline_bytes()
    m = per_copy_bytes(row["max_models_loaded"], gpu.nvml_total_bytes, base)
    artifact = int(row["size_on_disk_mb"] * 1e6)
    load_s = round(LOAD_FIXED_S + artifact / LOAD_BYTES_PER_S, 3)
    wl = load_workload("blog").model_copy(update={"generator": gen})
    endpoint = EndpointConfig(instance_type=row["instance_type"])   # its default overhead: 30 ms
    target_l, target_x, target_u = row["latency_ms"], row["throughput_qps"], row["max_concurrent_users"]
    steps = [u for u in wl.user_steps if u <= target_u]
    until = next(s.end_s for s in wl.stages if s.users >= target_u)
    s1, theta = max(0.002, target_l / 4000), 1.0
    n = row["max_models_loaded"]

    def make(s1: float, theta: float, limit: int | None) -> ModelProfile:
        item_share, overlap = concurrency(theta)
        per_item = item_share * s1
        tri = TRITON[row["framework"]]
        return ModelProfile(
            name=profile_name(row), model=row["model"], framework=row["framework"], gpu=gpu.key,
            artifact_bytes=artifact, gpu_memory_bytes=m, baseline_gpu_bytes=base,
            load_s=load_s, unload_s=UNLOAD_S,
            service=[{"batch": 1, "seconds": round(s1, 6), "cv": SERVICE_CV},
                     {"batch": tri["max_batch_size"], "seconds": round(s1 + per_item * (tri["max_batch_size"] - 1), 6),
                      "cv": SERVICE_CV}],
            input_bytes=payload_bytes(row["use_case"]), output_bytes=1024,
            decode_s_per_byte=float(f"{decode_per_byte(row['instance_type'], gen):.4g}"), host_cpu_speed=itype.cpu_speed,
            gpu_overlap=round(overlap, 4), max_inflight=limit, triton=tri,
            provenance={"method": "derived", "source": SOURCE, "date": "2023",
                        "device": f"{gpu.name} ({row['instance_type']})", "triton_version": "22.10 (SageMaker image)",
                        "command": "python -m mmesim.derive.blog --write",
                        "notes": (f"fitted to latency {target_l} ms, throughput {target_x} qps, max users {target_u}, "
                                  f"max models {n}; load/unload times not published: "
                                  f"load = {LOAD_FIXED_S} s + artifact at {LOAD_BYTES_PER_S / 1e6:.0f} MB/s, unload {UNLOAD_S} s")})

    def simulate(p: ModelProfile, duration: float):
        sim = Simulation([p], endpoint, wl, [n], seed=seed)
        return sim.run(duration)

    # Solve (log s1, theta) -> (latency, throughput) with Newton steps on a finite-difference
    # Jacobian: latency answers mostly to the batch-1 time, throughput to how much work the
    # GPU gets done when busy (theta), but each moves the other through queueing.
    best: list = [np.inf, None]     # every run counts: keep the closest point seen

    def residual(x: np.ndarray) -> np.ndarray:
        got = _metrics(simulate(make(math.exp(x[0]), x[1], None), until), steps)
        if verbose:
            print(f"  {profile_name(row)}: s1={math.exp(x[0]) * 1000:.2f}ms theta={x[1]:.3f} "
                  f"-> {got['latency_ms']:.1f} ms {got['throughput_qps']:.1f} qps")
        f = np.array([math.log(got["latency_ms"] / target_l), math.log(got["throughput_qps"] / target_x)])
        if np.abs(f).max() < best[0]:
            best[:] = [np.abs(f).max(), x.copy()]
        return f

    x = np.array([math.log(s1), theta])
    f = residual(x)
    it = 0
    for it in range(1, MAX_ITERATIONS + 1):
        if best[0] < TOLERANCE:
            break
        jac = np.empty((2, 2))
        for j in range(2):
            h = np.zeros(2)
            h[j] = 0.05
            jac[:, j] = (residual(x + h) - f) / 0.05
            if abs(jac[1, 1]) < 1e-3 and j == 1:    # flat: throughput set by something else here
                jac[1, 1] = -1e-3 if f[1] > 0 else 1e-3
        try:
            step = -np.linalg.solve(jac, f)
        except np.linalg.LinAlgError:
            step = -f
        step = np.clip(step, -0.7, 0.7)
        for _ in range(4):     # backtrack while the step makes things worse
            x_new = x + step
            x_new[1] = min(max(x_new[1], 0.0), THETA_MAX)
            f_new = residual(x_new)
            if np.abs(f_new).sum() < np.abs(f).sum():
                break
            step /= 2
        x, f = x_new, f_new
    s1, theta = math.exp(best[1][0]), best[1][1]
    # overload limit: from the peaks in flight of a run without one (identical until the first failure)
    run = simulate(make(s1, theta, None), wl.duration_s)
    limit = _limit_for(run, target_u, wl)
    profile = make(s1, theta, limit)
    got = _metrics(simulate(profile, wl.duration_s), wl.user_steps)
    return Fit(profile, got["latency_ms"] or 0.0, got["throughput_qps"] or 0.0, got["max_concurrent_users"], it)


def _limit_for(run, target_u: int, wl) -> int | None:
    """An in-flight limit that no arrival meets while the published maximum of users runs,
    and that some arrival meets before the next step ends: midway between the two peaks.
    (Failures while the users ramp up between steps fall in no step's rows, as in the
    reference's arithmetic.)"""
    nxt = next((u for u in wl.user_steps if u > target_u), None)
    if nxt is None:
        return None
    leave = next(t for t, u in run.users if u > target_u)
    after = [t for t, u in run.users if t > leave and u > nxt]
    next_end = after[0] if after else run.duration_s
    before = max((p for t, _, p in run.inflight_peaks if t <= leave), default=0)
    within = max((p for t, _, p in run.inflight_peaks if leave < t <= next_end), default=0)
    return (before + 1 + max(within, before + 1)) // 2


def attainable_fraction(rows: list[dict], gpu_key: str, framework: str) -> float:
    """The fraction of peak FLOP/s this GPU reaches for this framework's engines, from ONE
    GPU's published rows: the most any of its rows achieved (model FLOPs x published
    throughput / peak). At least that much is attainable; the row that reaches it is taken
    as GPU-bound, and every other row's shortfall from it as host-bound time."""
    gpu = load_catalog().gpu(gpu_key)
    best = max(gpu_work(r["model"], framework).flops_per_item * r["throughput_qps"]
               for r in rows if GPU_KEYS[r["gpu"]] == gpu_key and r["framework"] == framework)
    return best / gpu.peak_flops(framework)


def split(profile: ModelProfile, rows: list[dict]) -> ModelProfile:
    """Host-bound and GPU parts of ``profile``'s two execution figures, by evidence from its
    own GPU's rows only (``rows`` may hold others; they are not read):
    - busy: the GPU time of a busy batch per item (the roofline at the rate this GPU attains,
      ``attainable_fraction``, or its memory traffic if longer) times the published
      throughput is the share of a busy item's time that is GPU work, the rest is host-bound;
    - batch 1: the model's GPU work at that attainable rate (or its weight traffic at peak
      bandwidth, if longer) against the fitted batch-1 time; the rest is host-bound (GPU
      work at batch 1 runs at no better than the batched rate, so this host share is an
      upper bound)."""
    gpu = load_catalog().gpu(profile.gpu)
    eta = attainable_fraction(rows, profile.gpu, profile.framework)
    work = gpu_work(profile.model, profile.framework).model_copy(update={"peak_fraction": round(eta, 4)})
    row = next(r for r in rows if GPU_KEYS[r["gpu"]] == profile.gpu and r["model"] == profile.model
               and r["framework"] == profile.framework)
    b = busy_batch(profile)
    busy_gpu = gpu_seconds(work, b, gpu, profile.framework) / b * row["throughput_qps"]
    g1 = gpu_seconds(work, 1, gpu, profile.framework)
    s1 = profile.service[0].seconds
    working = working_estimate(profile.model, profile.framework, [t.batch for t in profile.service])
    return profile.model_copy(update={"work": work, "host_share": round(1 - min(1.0, g1 / s1), 4),
                                      "busy_host_share": round(1 - min(1.0, busy_gpu), 4),
                                      "working_memory": working, "memory_source": WORKING_SOURCE})


def with_shares(profiles: list[ModelProfile], rows: list[dict] | None = None) -> list[ModelProfile]:
    rows = rows if rows is not None else reference_rows()
    return [split(p, rows) for p in profiles]


def derive_all(verbose: bool = False, only: str | None = None, report=None,
               gpus: list[str] | None = None) -> tuple[list[Fit], LoadGenerator]:
    """Every row's profile; with ``gpus`` (e.g. ["T4"]) from those GPUs' rows alone, the
    load generator included, so that nothing is fitted on another GPU's rows."""
    rows = reference_rows(gpus)
    gen = generator(rows)
    fits = []
    for row in rows:
        if only and profile_name(row) != only:
            continue
        fits.append(fit_row(row, gen, verbose=verbose))
        fits[-1].profile = split(fits[-1].profile, rows)
        if report:
            report(fits[-1])
    return fits, gen


def write(fits: list[Fit], gen: LoadGenerator, out: Path | None = None) -> None:
    out = out or builtin_dir()
    for f in fits:
        f.profile.save(out / f"{f.profile.name}.json")
    wl_path = builtin_workloads()["blog"]
    text = wl_path.read_text()
    line = (f"generator: {{workers: {gen.workers}, cpu_s_per_request: {gen.cpu_s_per_request}, "
            f"cpu_s_per_byte: {gen.cpu_s_per_byte}}}")
    wl_path.write_text(re.sub(r"^generator:.*$", line, text, flags=re.M))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write mmesim/profiles/*.json and the blog workload's generator")
    ap.add_argument("--only", help="derive one profile, e.g. resnet50-pytorch-t4")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    def report(f: Fit) -> None:
        p = f.profile
        print(f"{p.name:38s} mem/copy {p.gpu_memory_bytes / MiB:7.1f} MiB  s1 {p.service[0].seconds * 1e3:7.2f} ms  "
              f"s{p.service[-1].batch} {p.service[-1].seconds * 1e3:7.1f} ms  limit {p.max_inflight}  -> "
              f"{f.latency_ms:6.1f} ms {f.throughput_qps:6.1f} qps users {f.max_concurrent_users} ({f.iterations} it)",
              flush=True)

    print(f"generator: {generator()}")
    fits, gen = derive_all(args.verbose, args.only, report)
    if args.write:
        write(fits, gen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
