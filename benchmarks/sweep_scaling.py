"""Sweep and partition speed: `python benchmarks/sweep_scaling.py`.

1. A sweep of ``--configs`` configurations (default 200: instance count x memory threshold x
   Zipf exponent x seed), each ``--minutes`` simulated minutes (default 10), on 1 and on 2
   local worker processes (or ``--cluster``): wall time and the speed-up.
2. A large endpoint simulated in partitions (one instance each) on 2 workers: wall time per
   simulated hour per worker. The issue's size (100 instances, 10,000 models, 10,000 req/s:
   36 million requests an hour) is the default of ``--full``; without it the endpoint is
   scaled down (``--instances``, ``--models``, ``--rps``, ``--seconds``) to fit a small
   shared machine, and the figure is also extrapolated to the full size by request count
   (the simulator's cost is linear in requests).
3. The partitioning's error against the unpartitioned simulation on an endpoint that fits
   one process (``--check-instances`` instances).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from mmesim.endpoint import EndpointConfig
from mmesim.plan.parallel import Runner
from mmesim.plan.partition import compare, merge, partitions, run_part
from mmesim.plan.sweep import SweepBase, points, run_point
from mmesim.profile import load_profile
from mmesim.results.summary import summarize
from mmesim.workload import Workload

PROFILE = "bert-base-uncased-tensorrt-t4"


def sweep_configs(n: int, minutes: float, rate: float) -> list:
    """``n`` distinct configurations of one endpoint under ``rate`` req/s for ``minutes``."""
    wl = Workload(name="bench", kind="poisson", rates=[{"end_s": minutes * 60, "rate": rate}],
                  popularity={"kind": "zipf", "s": 1.0})
    base = SweepBase([load_profile(PROFILE)], {"instance_type": "ml.g4dn.xlarge"}, wl, copies=200)
    grid = {"instance_count": [1, 2], "memory_threshold": [0.5, 0.7, 0.9, 0.95, 1.0],
            "workload.popularity.s": [0.8, 1.0, 1.2, 1.4], "seed": list(range(max(1, -(-n // 40))))}
    return points(base, grid)[:n]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_sweep(pts, workers: int, cluster: str | None) -> tuple[float, float, list]:
    """Wall time of the sweep, and the CPU seconds its local worker processes used."""
    cpu0 = _children_cpu()
    with Runner(cluster, workers, quiet=True) as runner:
        runner.map(run_point, pts[:workers])          # start-up (imports in each worker) not timed
        t0 = time.perf_counter()
        rows = runner.map(run_point, pts)
        wall = time.perf_counter() - t0
    return wall, _children_cpu() - cpu0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10.0, help="req/s of each sweep configuration (10)")
    ap.add_argument("--cluster", help="a Dask scheduler for the sweep instead of local processes")
    ap.add_argument("--full", action="store_true", help="the issue's 100-instance, 10,000-model endpoint")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--models", type=int, default=2000)
    ap.add_argument("--rps", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--check-instances", type=int, default=4)
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()

    if not args.skip_sweep:
        pts = sweep_configs(args.configs, args.minutes, args.rate)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
        t1, c1, rows1 = timed_sweep(pts, 1, args.cluster)
        t2, c2, rows2 = timed_sweep(pts, 2, args.cluster)
        reqs = sum(r["requests"] for r in rows1)
        print(f"sweep: {len(pts)} configurations x {args.minutes:g} simulated minutes at {args.rate:g} req/s "
              f"({reqs:,} requests)")
        print(f"  1 worker : {t1:7.1f} s wall, {c1:6.1f} CPU-s in workers")
        print(f"  2 workers: {t2:7.1f} s wall, {c2:6.1f} CPU-s in workers   speed-up {t1 / t2:.2f}x   "
              f"identical rows: {rows1 == rows2}   (load average now {os.getloadavg()[0]:.1f})")

    inst, models, rps, secs = ((100, 10_000, 10_000.0, 3600.0) if args.full
                               else (args.instances, args.models, args.rps, args.seconds))
    ep = EndpointConfig(instance_type="ml.g5.2xlarge", instance_count=inst)
    wl = Workload(name="large", kind="poisson", rates=[{"end_s": secs, "rate": rps}], popularity={"kind": "zipf"})
    profiles = [load_profile(PROFILE)]
    parts = partitions(profiles, ep, wl, [models], seed=0)
    with Runner(None, 2, quiet=True) as runner:
        t0 = time.perf_counter()
        runs = runner.map(run_part, parts)
        sim_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = summarize(merge(runs, 1))
    merge_wall = time.perf_counter() - t0
    wall = sim_wall + merge_wall
    per_hour_per_worker = wall * 2 * 3600 / secs
    full_requests = 10_000 * 3600
    print(f"partitioned endpoint: {inst} x ml.g5.2xlarge, {models:,} models, {rps:,.0f} req/s, {secs:g} simulated s"
          f"{'' if args.full else ' (scaled down from 100 instances, 10,000 models, 10,000 req/s, 1 h)'}")
    print(f"  {len(parts)} partitions on 2 workers: {s.requests:,} requests, {sim_wall:.1f} s simulating + "
          f"{merge_wall:.1f} s merging and summarising = {wall:.1f} s wall")
    print(f"  wall time per simulated hour per worker: {per_hour_per_worker:,.0f} worker-s "
          f"({s.requests / wall:,.0f} requests/s of wall time)")
    if not args.full:
        scale = full_requests / max(1, s.requests)
        print(f"  extrapolated to the full endpoint (36 million requests): "
              f"{per_hour_per_worker * scale * secs / 3600:,.0f} worker-s per simulated hour, "
              f"{per_hour_per_worker * scale * secs / 3600 / 2:,.0f} s wall on 2 workers")

    ci = args.check_instances
    for case, per_instance in (("models fit", 30), ("memory pressure", 100)):
        err = compare(profiles, EndpointConfig(instance_type="ml.g5.2xlarge", instance_count=ci),
                      Workload(name="check", kind="poisson", rates=[{"end_s": 60, "rate": 150.0 * ci}],
                               popularity={"kind": "zipf"}), [per_instance * ci], seed=0, workers=2)
        print(f"partitioning error against the whole simulation, {case}: {ci} x ml.g5.2xlarge, "
              f"{per_instance * ci} models, {150 * ci} req/s, 60 s")
        for key, v in err.items():
            print(f"  {key:12s} whole {v['whole']:>12,.1f}   partitioned {v['partitioned']:>12,.1f}   "
                  f"error {100 * v['error']:+6.1f}%")

if __name__ == "__main__":
    main()
