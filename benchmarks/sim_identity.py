"""Did a change to the simulator change what it simulates? Runs a few workloads that cover
the model's paths (closed loop with a client generator, a CPU-only host whose generator
shares the cores, several profiles over two instances with working memory and a short
model-ready timeout, eviction churn over 1,000 models) and digests every output: the
request records column by column, model events, memory, utilisation and in-flight peaks.

    python benchmarks/sim_identity.py --save FILE    # before a change
    python benchmarks/sim_identity.py --check FILE   # after it: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from mmesim.endpoint import EndpointConfig
from mmesim.profile import load_profile
from mmesim.sim import Simulation
from mmesim.workload import Workload, load_workload

MEASURED = Path(__file__).resolve().parent.parent / "mmesim" / "profiles" / "measured"


def _digest(run) -> dict:
    r = run.records
    out = {"requests": len(r)}
    for col in r.COLUMNS:
        out[col] = hashlib.sha256(bytes(getattr(r, col))).hexdigest()[:16]
    for name in ("events", "memory", "utilization", "inflight_peaks", "gpu_busy_s", "cpu_busy_s"):
        out[name] = hashlib.sha256(repr(getattr(run, name)).encode()).hexdigest()[:16]
    return out


def workloads() -> dict:
    """name -> a function returning a finished Run."""
    def blog():
        return Simulation([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.g4dn.2xlarge"),
                          load_workload("blog"), [46], seed=3).run()

    def local():
        wl = Workload(kind="users", stages=[{"end_s": 60, "users": 8, "spawn_rate": 2}], wait_s=(0.0, 0.05),
                      generator={"workers": 2, "cpu_s_per_request": 0.003, "timed_share": 0.6, "on_host": True})
        return Simulation([load_profile(MEASURED / "tiny-bert-python-cpu.json")],
                          EndpointConfig(instance_type="local", memory_budget_bytes=4 << 30), wl, [6], seed=1).run()

    def mix():
        profiles = [load_profile(n) for n in ("resnet50-pytorch-a10g", "bert-base-uncased-tensorrt-a10g",
                                              "roberta-large-pytorch-a10g")]
        wl = Workload(kind="poisson", rates=[{"end_s": 60, "rate": 150}, {"end_s": 120, "rate": 400}],
                      popularity={"kind": "zipf", "s": 0.8})
        ep = EndpointConfig(instance_type="ml.g5.2xlarge", instance_count=2, model_ready_timeout_s=5,
                            invocation_timeout_s=20)
        return Simulation(profiles, ep, wl, [30, 40, 20], seed=7).run()

    def churn():
        wl = Workload(kind="poisson", rates=[{"end_s": 120, "rate": 500}], popularity={"kind": "zipf", "s": 1.0})
        return Simulation([load_profile("bert-base-uncased-tensorrt-a10g")],
                          EndpointConfig(instance_type="ml.g5.2xlarge", instance_count=3), wl, [1000]).run()

    def trace():
        import random
        import tempfile
        rng = random.Random(5)
        rows = sorted((round(rng.uniform(0, 60), 3), f"resnet50-v{rng.randrange(12)}") for _ in range(3000))
        path = Path(tempfile.mkdtemp()) / "trace.csv"
        path.write_text("timestamp,model\n" + "".join(f"{t},{m}\n" for t, m in rows))
        return Simulation([load_profile("resnet50-tensorrt-t4")], EndpointConfig(instance_type="ml.g4dn.xlarge"),
                          Workload(kind="trace", trace=str(path)), [12], seed=2).run()

    return {"blog": blog, "local": local, "mix": mix, "churn": churn, "trace": trace}


def main() -> int:
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    args = ap.parse_args()
    got = {name: _digest(run()) for name, run in workloads().items()}
    if args.save:
        Path(args.save).write_text(json.dumps(got, indent=1))
        sizes = ", ".join(f"{k} ({v['requests']:,} requests)" for k, v in got.items())
        print(f"saved digests of {sizes}")
        return 0
    want = json.loads(Path(args.check).read_text())
    bad = [f"{name}.{k}" for name in want for k in want[name] if got.get(name, {}).get(k) != want[name][k]]
    print("identical" if not bad else f"DIFFERENT: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
