"""What a mix of different models does on a GPU multi-model endpoint, and what a second
instance buys: resnet50 (TorchScript), BERT-base (TensorRT) and RoBERTa-large (TorchScript)
on ml.g5.2xlarge, with more copies than one GPU holds, so models are loaded on demand and
the least recently used idle ones evicted.

    python examples/heterogeneous.py [--seed 0] [--out out/heterogeneous]

Prints one summary line per configuration and writes each run's files under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from mmesim.endpoint import EndpointConfig
from mmesim.outputs import write_outputs
from mmesim.profile import load_profile
from mmesim.report.console import console
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import load_workload

PROFILES = ["resnet50-pytorch-a10g", "bert-base-uncased-tensorrt-a10g", "roberta-large-pytorch-a10g"]
COPIES = [30, 20, 10]          # 30 x 280 + 20 x 391 + 10 x 1462 MiB: about twice what one A10G holds


def compare(counts=(1, 2), seed: int = 0, out: str | Path | None = None):
    """One summary per instance count; each run's files under ``out/<count>-instance``."""
    workload = load_workload(Path(__file__).with_name("mixed_endpoint.yaml"))
    profiles = [load_profile(p) for p in PROFILES]
    results = []
    for count in counts:
        endpoint = EndpointConfig(instance_type="ml.g5.2xlarge", instance_count=count)
        run = simulate(profiles, endpoint, workload, copies=COPIES, seed=seed, warm=False)
        s = summarize(run)
        if out:
            write_outputs(run, s, Path(out) / f"{count}-instance")
        results.append((count, run, s))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/heterogeneous")
    args = ap.parse_args(argv)
    table = Table(title="resnet50 + BERT + RoBERTa on ml.g5.2xlarge, 60 copies, 20 -> 100 req/s")
    for col in ("instances", "requests", "failed", "by cause", "cold starts", "loads / unloads", "p50 ms", "p99 ms",
                "USD per million ok"):
        table.add_column(col, justify="right")
    for count, run, s in compare(seed=args.seed, out=args.out):
        ok = s.requests - s.failures
        per_million = s.cost_per_hour_usd * run.duration_s / 3600 / ok * 1e6 if ok else None
        causes = ", ".join(f"{n:,} {c}" for c, n in s.failures_by_cause.items()) or "-"
        table.add_row(str(count), f"{s.requests:,}", f"{100 * s.failures / max(s.requests, 1):.1f}%", causes,
                      f"{s.cold_starts:,}", f"{s.loads:,} / {s.unloads:,}", f"{s.p50_ms:.0f}", f"{s.p99_ms:.0f}",
                      f"{per_million:.2f}" if per_million else "-")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
