"""Does the machine's own activity warm a model's executions? One copy paced alone against the
same copies under a closed-loop load, interleaved, each execution's CPU (the stubs' own log)
binned by how long its copy had been idle.

A profile's warmth curve (``host_warmth``) comes from one copy paced alone, where the copy's
idle time is the machine's too. Under load the machine never idles while a copy does, so
the curve can only be right there if the cost after an idle spell belongs to the copy (its
caches, its pages) and not to the machine (halted virtual CPUs, cold shared caches, another
tenant on the core). This measures which: the same copy idle, with the machine idle
(``alone``: one user on one copy) and busy (``load``: users on every copy), in alternating
rounds a few seconds long, so that this VM's drift (10-50 % within minutes) moves both alike.

    python examples/warmth_under_load.py [--profile calibration/profiles/tiny-bert-python-cpu.json]
                                         [--rounds 3] [--seconds 10] [--users 4] [--copies 4]
                                         [--out out/warmth_under_load]

Writes warmth_under_load.json and .csv (per round and bin: executions, median CPU ms).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_local import ROOT, LocalEndpoint  # noqa: E402

from mmesim.catalog import host_cpu  # noqa: E402
from mmesim.loadtest import run_loadtest  # noqa: E402
from mmesim.profile import load_profile  # noqa: E402
from mmesim.report.console import console  # noqa: E402
from mmesim.triton import execlog  # noqa: E402
from mmesim.workload import Workload  # noqa: E402

BINS_MS = (0, 2, 5, 10, 20, 50)
MIN_EXECUTIONS = 5


def by_copy_idle(log: dict, bins_ms=BINS_MS) -> list[dict]:
    """Each execution of ``log`` (mmesim.triton.execlog.read) by its copy's idle time since
    that copy's previous execution ended: per bin, the executions and their median CPU in ms
    (None under MIN_EXECUTIONS). A copy's first execution has no idle time and is left out."""
    start, end = log["start_ns"] / 1e6, log["end_ns"] / 1e6
    last, idle, cpu = {}, [], []
    for i in np.argsort(start, kind="stable"):
        m = log["model"][i]
        if m in last:
            idle.append(start[i] - last[m])
            cpu.append(log["cpu"][i])
        last[m] = end[i]
    idle, cpu = np.asarray(idle), np.asarray(cpu)
    out = []
    for lo, hi in zip(bins_ms, bins_ms[1:]):
        sel = cpu[(idle >= lo) & (idle < hi)]
        out.append({"idle_ms": [lo, hi], "executions": int(len(sel)),
                    "cpu_ms": float(np.median(sel)) if len(sel) >= MIN_EXECUTIONS else None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(ROOT / "calibration" / "profiles" / "tiny-bert-python-cpu.json"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="each phase of a round")
    ap.add_argument("--users", type=int, default=4, help="the load's closed-loop users (waits 0-10 ms)")
    ap.add_argument("--copies", type=int, default=4, help="copies the load spreads over")
    ap.add_argument("--out", default="out/warmth_under_load")
    args = ap.parse_args(argv)
    profile = load_profile(args.profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def users(n: int, wait: tuple[float, float]) -> Workload:
        return Workload(name="warmth", kind="users", wait_s=wait,
                        stages=[{"end_s": args.seconds, "users": n, "spawn_rate": 100}])
    # alone: one user on one copy, pausing 0-20 ms (its copy idles as long as the machine);
    # load: users on every copy, pausing 0-10 ms (each copy idles while the others run)
    phases = [("alone", users(1, (0.0, 0.02)), [1]), ("load", users(args.users, (0.0, 0.01)), [args.copies])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmesim-warmth-") as tmp:
        server = LocalEndpoint([profile.model], Path(tmp), trace=True)
        try:
            server.serve([profile], [args.copies])
            for r in range(args.rounds):
                for name, wl, copies in phases:
                    t0 = time.monotonic_ns()
                    run_loadtest(server.url, None, wl, [profile], copies, Path(tmp) / f"{name}{r}",
                                 protocol="triton", client="fast")
                    for b in by_copy_idle(execlog.read(server.exec_log, (t0, time.monotonic_ns()))):
                        rows.append({"round": r, "phase": name, **b})
                    console.print(f"round {r + 1}/{args.rounds}: {name} done", highlight=False)
        finally:
            server.stop()
    table = Table(title=f"{profile.model}: median execution CPU ms by its copy's idle (executions), "
                        f"alone vs under load ({args.users} users on {args.copies} copies)")
    table.add_column("round / phase")
    for lo, hi in zip(BINS_MS, BINS_MS[1:]):
        table.add_column(f"{lo}-{hi} ms", justify="right")
    for r in range(args.rounds):
        for name, _, _ in phases:
            cells = [x for x in rows if x["round"] == r and x["phase"] == name]
            table.add_row(f"{r + 1} {name}", *("-" if c["cpu_ms"] is None else f"{c['cpu_ms']:.2f} ({c['executions']})"
                                               for c in cells))
    ratio = []
    for lo, hi in zip(BINS_MS, BINS_MS[1:]):
        med = {name: [x["cpu_ms"] for x in rows if x["phase"] == name and x["idle_ms"] == [lo, hi]
                      and x["cpu_ms"] is not None] for name, _, _ in phases}
        ratio.append(float(np.median(med["load"]) / np.median(med["alone"])) if med["load"] and med["alone"]
                     else None)
    table.add_row("load / alone", *("-" if x is None else f"x{x:.2f}" for x in ratio))
    console.print(table)
    (out / "warmth_under_load.json").write_text(json.dumps(
        {"model": profile.model, "host_cpu": host_cpu(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "users": args.users, "copies": args.copies, "rounds": rows,
         "load_over_alone": dict(zip([f"{lo}-{hi}" for lo, hi in zip(BINS_MS, BINS_MS[1:])], ratio))}, indent=1) + "\n")
    with (out / "warmth_under_load.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "phase", "idle_ms_from", "idle_ms_to", "executions", "cpu_ms"])
        for x in rows:
            w.writerow([x["round"], x["phase"], *x["idle_ms"], x["executions"], x["cpu_ms"]])
    console.print(f"wrote {out / 'warmth_under_load.json'} and {out / 'warmth_under_load.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
