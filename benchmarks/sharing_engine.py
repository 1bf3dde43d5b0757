"""The processor-sharing engine against an earlier version of it, as ratios measured in one
process: the earlier ``Cores`` (sim/cores.py + sim/sharing.py) and ``SharedRate``
(sim/transfer.py) are read from a git ref and run side by side with today's on the same
job streams, then a whole simulation on instance type local is run with each.
A ratio above 1 means today's engine is faster. Target: every ratio >= 0.95.

    python benchmarks/sharing_engine.py [--ref main] [--jobs 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import subprocess
import sys
import time
import types
from pathlib import Path

import simpy

ROOT = Path(__file__).resolve().parent.parent


def old_modules(ref: str) -> dict[str, types.ModuleType]:
    """sim/sharing.py, sim/transfer.py and sim/cores.py at ``ref``, as modules of their own
    (the earlier cores.py importing the earlier sharing.py)."""
    mods = {}
    saved = sys.modules["mmesim.sim.sharing"]
    try:
        for name in ("sharing", "transfer", "cores"):
            src = subprocess.run(["git", "show", f"{ref}:mmesim/sim/{name}.py"], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout
            mod = mods[name] = types.ModuleType(f"{ref}_{name}")
            exec(compile(src, f"{ref}:mmesim/sim/{name}.py", "exec"), mod.__dict__)
            if name == "sharing":
                sys.modules["mmesim.sim.sharing"] = mod
    finally:
        sys.modules["mmesim.sim.sharing"] = saved
    return mods


def cores_stream(Cores, jobs: int, seed: int = 0) -> float:
    """Jobs of 1 or 2 cores' demand arriving at random on 2 cores (load ~0.9)."""
    rng = random.Random(seed)
    env = simpy.Environment()
    cores = Cores(env, 2)
    finished = [0]

    def done(_):
        finished[0] += 1

    def arrivals():
        for _ in range(jobs):
            yield env.timeout(rng.expovariate(1 / 0.004))
            cores.run(rng.uniform(0.001, 0.005), 1 + (rng.random() < 0.3), done, None)
    env.process(arrivals())
    t = time.process_time()
    env.run()
    assert finished[0] == jobs
    return time.process_time() - t


def rate_stream(SharedRate, jobs: int, seed: int = 0) -> float:
    """Transfers of random sizes on a link of 1 GB/s, 100 MB/s per transfer."""
    rng = random.Random(seed)
    env = simpy.Environment()
    link = SharedRate(env, 1e9, 1e8)
    finished = [0]

    def done(_value, _seconds):
        finished[0] += 1

    def arrivals():
        for _ in range(jobs):
            yield env.timeout(rng.expovariate(1 / 0.002))
            link.start(rng.uniform(1e5, 3e6), None, done)
    env.process(arrivals())
    t = time.process_time()
    env.run()
    assert finished[0] == jobs
    return time.process_time() - t


def local_simulation(seconds: float) -> float:
    """tiny-bert x 4 on instance type local, 8 users and an on-host client: every request
    decodes and executes on the shared cores."""
    from mmesim.endpoint import EndpointConfig
    from mmesim.profile import load_profile
    from mmesim.sim import Simulation
    from mmesim.workload import Workload
    prof = load_profile(ROOT / "calibration" / "profiles" / "tiny-bert-python-cpu.json")
    wl = Workload(stages=[{"end_s": seconds, "users": 8, "spawn_rate": 100}], wait_s=(0, 0.01),
                  generator={"workers": 1, "cpu_s_per_request": 0.0005, "on_host": True})
    sim = Simulation([prof], EndpointConfig(instance_type="local", memory_budget_bytes=2 << 30), wl, [4])
    t = time.process_time()
    sim.run(seconds)
    return time.process_time() - t


def best_of_alternating(old_fn, new_fn, repeat: int) -> tuple[float, float]:
    """The fastest of ``repeat`` runs of each, the two taking turns, so that whatever drifts
    during the measurement (the machine, the interpreter's heap) weighs on both alike."""
    olds, news = [], []
    for _ in range(repeat):
        gc.collect()
        olds.append(old_fn())
        gc.collect()
        news.append(new_fn())
    return min(olds), min(news)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git ref of the earlier engine")
    ap.add_argument("--jobs", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=300.0, help="simulated seconds of the local simulation")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    import mmesim.sim.host as host           # where an instance builds its cores and bandwidths
    import mmesim.sim.triton as triton
    from mmesim.sim.cores import Cores
    from mmesim.sim.transfer import SharedRate
    old = old_modules(args.ref)
    rows = []
    for what, fn, new_cls, old_cls in (("cores, job stream", cores_stream, Cores, old["cores"].Cores),
                                       ("bandwidth, transfer stream", rate_stream, SharedRate,
                                        old["transfer"].SharedRate)):
        rows.append((what, *best_of_alternating(lambda: fn(old_cls, args.jobs), lambda: fn(new_cls, args.jobs),
                                                args.repeat)))

    def earlier_simulation() -> float:
        # the host builds the earlier classes, and a model's server knows them for cores (its
        # hand-off and warmth): the same simulation, on the earlier engine
        saved = host.Cores, host.SharedRate, triton.Cores
        host.Cores, host.SharedRate = old["cores"].Cores, old["transfer"].SharedRate
        triton.Cores = old["cores"].Cores
        try:
            return local_simulation(args.seconds)
        finally:
            host.Cores, host.SharedRate, triton.Cores = saved
    rows.append((f"simulation on local ({args.seconds:.0f} s)",
                 *best_of_alternating(earlier_simulation, lambda: local_simulation(args.seconds), args.repeat)))
    print(f"{'':32} {args.ref + ' (s)':>12} {'today (s)':>10} {'speed ratio':>12}")
    for what, t_old, t_new in rows:
        print(f"{what:32} {t_old:12.3f} {t_new:10.3f} {t_old / t_new:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
