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
                                         [--rounds 3] [--seconds 10] [--users 4 | 1,2,4,8] [--copies 4]
                                         [--out out/warmth_under_load]

Under load it also asks what keys the saving: each execution's ``busy`` share (how much of its
copy's idle spell another copy executed) and ``overlap`` (another ran beside it).
Writes warmth_under_load.json and .csv (per round and bin: executions, median CPU ms) and
executions.csv (one row per execution: phase, copy, idle, busy, overlap, CPU).
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
from mmesim.triton.trace import open_share  # noqa: E402
from mmesim.workload import Workload  # noqa: E402

BINS_MS = (0, 2, 5, 10, 20, 50)
MIN_EXECUTIONS = 5


def copy_idle(log: dict) -> dict:
    """Each execution of ``log`` (mmesim.triton.execlog.read) but its copy's first: ``idle_ms``
    since that copy's previous execution ended, ``machine_idle_ms`` since any execution last
    ended (0: one was running), ``busy``: the share of that idle spell during which another
    copy executed (the machine's activity while this copy waited), ``overlap``:
    the share of the execution itself another one ran beside, and its ``cpu`` ms."""
    start, end = np.asarray(log["start_ns"]) / 1e6, np.asarray(log["end_ns"]) / 1e6
    order = np.argsort(start, kind="stable")
    last, keep, since = {}, [], []
    for i in order.tolist():
        m = log["model"][i]
        if m in last:
            keep.append(i)
            since.append(last[m])
        last[m] = end[i]
    keep, since = np.asarray(keep, dtype=np.int64), np.asarray(since, dtype=float)
    overlap = log.get("overlap")
    # the machine's last gap: since the latest end among executions that began before this one
    # (0 where one of them was still running)
    latest_end = np.empty(len(start))
    latest_end[order] = np.concatenate([[-np.inf], np.maximum.accumulate(end[order])[:-1]])
    return {"model": [log["model"][i] for i in keep], "idle_ms": start[keep] - since,
            "machine_idle_ms": np.clip(start[keep] - latest_end[keep], 0, None),
            "busy": open_share(start, end, since, start[keep]),
            "overlap": np.asarray(overlap)[keep] if overlap is not None else np.zeros(len(keep)),
            "cpu": np.asarray(log["cpu"])[keep]}


def by_copy_idle(log: dict, bins_ms=BINS_MS, where=None) -> list[dict]:
    """Each execution of ``log`` by its copy's idle time (``copy_idle``; a copy's first has
    none and is left out): per bin, the executions and their median CPU in ms (None under
    MIN_EXECUTIONS). ``where``: a mask over ``copy_idle``'s executions, to bin only those."""
    ctx = copy_idle(log)
    idle, cpu = ctx["idle_ms"], ctx["cpu"]
    if where is not None:
        idle, cpu = idle[where(ctx)], cpu[where(ctx)]
    out = []
    for lo, hi in zip(bins_ms, bins_ms[1:]):
        sel = cpu[(idle >= lo) & (idle < hi)]
        out.append({"idle_ms": [lo, hi], "executions": int(len(sel)),
                    "cpu_ms": float(np.median(sel)) if len(sel) >= MIN_EXECUTIONS else None})
    return out


BUSY_BINS = (0.0, 0.5, 0.9, 1.01)     # the share of a copy's idle spell another copy executed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(ROOT / "calibration" / "profiles" / "tiny-bert-python-cpu.json"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="each phase of a round")
    ap.add_argument("--users", default="4", help="the loads' closed-loop users (waits 0-10 ms), e.g. 1,2,4,8: "
                                                 "one load phase each per round")
    ap.add_argument("--copies", type=int, default=4, help="copies the load spreads over")
    ap.add_argument("--out", default="out/warmth_under_load")
    args = ap.parse_args(argv)
    try:
        loads = [int(u) for u in args.users.split(",")]
        if not loads or min(loads) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--users: whole numbers of 1 or more, comma-separated (got {args.users!r})")
    profile = load_profile(args.profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def users(n: int, wait: tuple[float, float]) -> Workload:
        return Workload(name="warmth", kind="users", wait_s=wait,
                        stages=[{"end_s": args.seconds, "users": n, "spawn_rate": 100}])
    # alone: one user on one copy, pausing 0-20 ms (its copy idles as long as the machine);
    # load: users on every copy, pausing 0-10 ms (each copy idles while the others run)
    phases = [("alone", users(1, (0.0, 0.02)), [1])]
    phases += [(f"load {n}" if len(loads) > 1 else "load", users(n, (0.0, 0.01)), [args.copies]) for n in loads]
    rows, executions = [], []
    with tempfile.TemporaryDirectory(prefix="mmesim-warmth-") as tmp:
        server = LocalEndpoint([profile.model], Path(tmp), trace=True)
        try:
            server.serve([profile], [args.copies])
            for r in range(args.rounds):
                for name, wl, copies in phases:
                    t0 = time.monotonic_ns()
                    run_loadtest(server.url, None, wl, [profile], copies, Path(tmp) / f"{name}{r}".replace(" ", ""),
                                 protocol="triton", client="fast")
                    log = execlog.read(server.exec_log, (t0, time.monotonic_ns()))
                    for b in by_copy_idle(log):
                        rows.append({"round": r, "phase": name, **b})
                    ctx = copy_idle(log)
                    executions += [{"round": r, "phase": name, "model": m, "idle_ms": round(float(i), 4),
                                    "machine_idle_ms": round(float(g), 4), "busy": round(float(bz), 4),
                                    "overlap": round(float(o), 4), "cpu_ms": round(float(c), 4)}
                                   for m, i, g, bz, o, c in zip(ctx["model"], ctx["idle_ms"], ctx["machine_idle_ms"],
                                                                ctx["busy"], ctx["overlap"], ctx["cpu"])]
                    console.print(f"round {r + 1}/{args.rounds}: {name} done", highlight=False)
        finally:
            server.stop()
    idle_bins = list(zip(BINS_MS, BINS_MS[1:]))
    table = Table(title=f"{profile.model}: median execution CPU ms by its copy's idle (executions), "
                        f"alone vs under load (users {args.users} on {args.copies} copies)")
    table.add_column("round / phase")
    for lo, hi in idle_bins:
        table.add_column(f"{lo}-{hi} ms", justify="right")
    for r in range(args.rounds):
        for name, _, _ in phases:
            cells = [x for x in rows if x["round"] == r and x["phase"] == name]
            table.add_row(f"{r + 1} {name}", *("-" if c["cpu_ms"] is None else f"{c['cpu_ms']:.2f} ({c['executions']})"
                                               for c in cells))

    def median_of(phase: str, lo: float, hi: float, busy: tuple[float, float] = (0.0, 1.01)) -> tuple[float | None, int]:
        cpu = [e["cpu_ms"] for e in executions if e["phase"] == phase and lo <= e["idle_ms"] < hi
               and busy[0] <= e["busy"] < busy[1]]
        return (float(np.median(cpu)) if len(cpu) >= MIN_EXECUTIONS else None), len(cpu)
    # over all rounds, each load against the alone curve at the same copy idle
    alone = {(lo, hi): median_of("alone", lo, hi)[0] for lo, hi in idle_bins}
    ratios = {}
    for name, _, _ in phases[1:]:
        ratios[name] = {}
        for lo, hi in idle_bins:
            load, _ = median_of(name, lo, hi)
            ratios[name][f"{lo}-{hi}"] = round(load / alone[lo, hi], 3) if load and alone[lo, hi] else None
        table.add_row(f"{name} / alone", *("-" if x is None else f"x{x:.2f}" for x in ratios[name].values()))
    console.print(table)
    # under load, at the same copy idle: does the machine's activity over the idle spell key the cost?
    busy = Table(title="under load / alone by the share of the copy's idle spell another copy executed "
                       "(executions)")
    busy.add_column("load, busy share")
    for lo, hi in idle_bins:
        busy.add_column(f"{lo}-{hi} ms", justify="right")
    by_busy = {}
    for name, _, _ in phases[1:]:
        for blo, bhi in zip(BUSY_BINS, BUSY_BINS[1:]):
            cells, key = [], f"{name}, {blo:g}-{min(bhi, 1):g}"
            by_busy[key] = {}
            for lo, hi in idle_bins:
                load, n = median_of(name, lo, hi, (blo, bhi))
                x = round(load / alone[lo, hi], 3) if load and alone[lo, hi] else None
                by_busy[key][f"{lo}-{hi}"] = {"ratio": x, "executions": n}
                cells.append("-" if x is None else f"x{x:.2f} ({n})")
            busy.add_row(key, *cells)
    console.print(busy)
    (out / "warmth_under_load.json").write_text(json.dumps(
        {"model": profile.model, "host_cpu": host_cpu(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "users": loads, "copies": args.copies, "rounds": rows, "load_over_alone": ratios,
         "load_over_alone_by_busy": by_busy}, indent=1) + "\n")
    with (out / "warmth_under_load.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "phase", "idle_ms_from", "idle_ms_to", "executions", "cpu_ms"])
        for x in rows:
            w.writerow([x["round"], x["phase"], *x["idle_ms"], x["executions"], x["cpu_ms"]])
    with (out / "executions.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(executions[0]) if executions else ["round"])
        w.writeheader()
        w.writerows(executions)
    console.print(f"wrote {out / 'warmth_under_load.json'}, warmth_under_load.csv and executions.csv (one row "
                  "per execution)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
