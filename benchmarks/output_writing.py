"""How long writing a run's outputs takes next to simulating it.

One simulated hour at 200 requests/s (Poisson, resnet50 TorchScript on one ml.g4dn.2xlarge
holding 10 copies, uniform over them): the simulation's CPU time, then the CPU time of
``write_outputs`` (summary.json, the three Locust CSVs with full history, requests.csv,
CloudWatch series, charts) and their ratio. Target: writing costs less than simulating
(ratio < 1), and grows linearly with the run's length (the --quick run is 1/6 of the hour).

    python benchmarks/output_writing.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

from mmesim.endpoint import EndpointConfig
from mmesim.outputs import write_outputs
from mmesim.profile import load_profile
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import Workload


def cpu(fn):
    gc.collect()
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 simulated minutes instead of an hour")
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args()
    seconds = 600 if args.quick else 3600
    wl = Workload(kind="poisson", rates=[{"end_s": seconds, "rate": args.rate}])
    profile = load_profile("resnet50-pytorch-t4")
    endpoint = EndpointConfig(instance_type="ml.g4dn.2xlarge")
    run, sim_s = cpu(lambda: simulate([profile], endpoint, wl, copies=10, seed=1))
    with tempfile.TemporaryDirectory() as out:
        _, write_s = cpu(lambda: write_outputs(run, summarize(run), out))
    n = len(run.records)
    print(f"{seconds} simulated s at {args.rate:g} req/s: {n:,} requests")
    print(f"simulate:      {sim_s:6.2f} CPU-s")
    print(f"write outputs: {write_s:6.2f} CPU-s  ({1e6 * write_s / n:.1f} us a request)")
    print(f"ratio write/simulate: {write_s / sim_s:.2f}  (target < 1)")


if __name__ == "__main__":
    main()
