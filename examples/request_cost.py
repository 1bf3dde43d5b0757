"""What a request costs in CPU on this machine, and how that changes with the request rate:
tiny-bert x 4 in a real Triton (Python backend, one thread), one Locust process, CPU per
request of the model's stubs (the execution), Triton's server process (HTTP, decoding) and
the client, at a few loads, and the Python backend's hand-off (Triton's compute time per
execution beyond the stub's CPU: a wait that holds the instance). Compare with the profile's
figures (calibrated one request at a time, on the processor its provenance names).

    python examples/request_cost.py [--client http|fast] [--out out/request_cost]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_local import ROOT, LocalEndpoint  # noqa: E402

from mmesim.loadtest.probe import measure_request_cost  # noqa: E402
from mmesim.profile import load_profile  # noqa: E402
from mmesim.report.console import console  # noqa: E402
from mmesim.workload import Workload  # noqa: E402

LOADS = [(1, (0.05, 0.5), 20), (16, (0.05, 0.5), 20), (1, (0.0, 0.01), 15), (2, (0.0, 0.01), 15),
         (4, (0.0, 0.01), 20)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", default="fast", choices=["http", "fast"])
    ap.add_argument("--out", default="out/request_cost")
    args = ap.parse_args(argv)
    profile = load_profile(ROOT / "calibration" / "profiles" / "tiny-bert-python-cpu.json")
    out = Path(args.out)
    table = Table(title=f"CPU ms per request, tiny-bert x 4, {args.client} client (profile: execution "
                        f"{1000 * profile.service[0].seconds:.2f}, server {1000 * profile.request_overhead_s:.2f}, "
                        f"on {profile.provenance.host_cpu})")
    for col in ("users", "waits s", "req/s", "stub (execution)", "hand-off", "Triton server + model threads", "client",
                "others' cores"):
        table.add_column(col, justify="right")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmesim-cost-") as tmp:
        server = LocalEndpoint(["tiny-bert"], Path(tmp))
        try:
            server.serve([profile], [4])
            for users, wait, seconds in LOADS:
                wl = Workload(name="cost", kind="users", wait_s=wait,
                              stages=[{"end_s": seconds, "users": users, "spawn_rate": 100}])
                c = measure_request_cost(server.url, server.server.pid, profile, 4, out / f"{users}u-{wait[1]}",
                                         args.client, workload=wl, stats_url=server.server.http_url)
                rows.append({"users": users, "wait_s": wait, "rps": c.requests / seconds, **c.to_dict()})
                table.add_row(str(users), f"{wait[0]}-{wait[1]}", f"{c.requests / seconds:.1f}",
                              f"{1000 * c.stub_cpu_s:.2f}", f"{1000 * c.handoff_s:.2f}",
                              f"{1000 * c.server_cpu_s:.2f} + {1000 * c.model_thread_s:.2f}",
                              f"{1000 * c.client_cpu_s:.2f}", f"{c.others_cores:.2f}")
        finally:
            server.stop()
    console.print(table)
    (out / "request_cost.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
