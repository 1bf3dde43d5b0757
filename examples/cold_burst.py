"""What a burst of cold models costs: N copies of a model, none on the instance, each asked
for once at the same moment. Downloads share the network, untars and deserialising share the
vCPUs, loads queue for Triton's load threads and share the disk and PCIe, so the Nth model is
ready much later than one alone (EndpointConfig.platform holds the knobs).

    python examples/cold_burst.py [--profile roberta-large-pytorch-t4] [--instance ml.g4dn.2xlarge]

Prints, per burst size: mean ModelDownloadingTime and ModelLoadingTime, and when the last
model was ready.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.table import Table

from mmesim.endpoint import EndpointConfig
from mmesim.profile import load_profile
from mmesim.report.console import console
from mmesim.sim import Simulation
from mmesim.workload import Workload


def burst(profile: str, instance: str, n: int, **platform) -> dict:
    """Mean download and load seconds, and when the last of ``n`` cold copies was ready."""
    p = load_profile(profile)
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "burst.csv"
        trace.write_text("timestamp,model\n" + "".join(f"0,{p.model}-v{i}\n" for i in range(n)))
        endpoint = EndpointConfig(instance_type=instance, platform=platform,
                                  invocation_timeout_s=3600, model_ready_timeout_s=3600)
        run = Simulation([p], endpoint, Workload(kind="trace", trace=str(trace)), [n], warm=False).run(3600)
    downloads = [e.seconds for e in run.events if e.kind == "download"]
    loads = [e for e in run.events if e.kind == "load"]
    return {"n": n, "download_s": sum(downloads) / len(downloads), "load_s": sum(e.seconds for e in loads) / len(loads),
            "last_ready_s": max(e.time + e.seconds for e in loads), "ok": sum(r.ok for r in run.records)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="roberta-large-pytorch-t4")
    ap.add_argument("--instance", default="ml.g4dn.2xlarge")
    args = ap.parse_args(argv)
    table = Table(title=f"{args.profile} on {args.instance}: N cold models asked for at once")
    for col in ("N", "ModelDownloadingTime s", "ModelLoadingTime s", "last model ready s"):
        table.add_column(col, justify="right")
    for n in (1, 2, 4, 8):
        b = burst(args.profile, args.instance, n)
        table.add_row(str(n), f"{b['download_s']:.2f}", f"{b['load_s']:.2f}", f"{b['last_ready_s']:.2f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
