"""Does this host run two threads woken at once on two cores? A probe of the scheduler, no
Triton involved.

The simulator shares a CPU-only host's cores fairly (processor sharing): two one-thread
executions on two cores do not slow each other. Triton's stubs on this project's 2-vCPU VM
did not behave so (docs/accuracy-this-machine.md, "Where the missing tail is"): one overlapped
execution in five waited for a core, with a core idle. This probe asks the same of the host alone: a driver
process wakes two worker processes at the same moment (futex semaphores, as Triton's
hand-off to its stubs), each burns ``--burst-ms`` of CPU, and the driver times until both
are done, after a pause drawn uniformly in 0-``--max-pause-ms`` (the time the cores idle).
Fair placement takes one burst; a worker placed behind the other takes up to two; a halted
virtual CPU that must be woken first adds its wake-up.

Then the pattern of a validation run without Triton (``chain``): four closed-loop clients
pausing 0-10 ms, each request relayed by one process to one of four "stub" processes that
burn 1 ms; it reports, with ``mmesim.triton.execlog``'s breakdown of Triton's stubs, how many
bursts ran alone or overlapped another and how many waited for a core (wall beyond CPU > 0.2 ms).

    python examples/host_wakeups.py [--burst-ms 1] [--max-pause-ms 50] [--rounds 800] [--chain-s 8]
                                    [--long-burst-ms 4] [--out out/host_wakeups]

It prints, per pause, the share of rounds in which one worker waited (wall beyond the burst
by more than 0.3 ms) and how long, and the kernel settings that bear on it (idle vCPUs
halting, vCPU packing); it writes the same as JSON and CSV. Run it on a quiet host.

Its ``placement`` (in host_wakeups.json) is what the simulator takes for this host
(``mmesim simulate --instance local --host-wakeups out/host_wakeups/host_wakeups.json``,
mmesim.endpoint.WakePlacement): of two overlapping bursts in the chain, the share in which the
one already running waited for a core (a thread woken beside it took its core, the other core
idle), and how long such a wait lasts at most (two bursts of ``--long-burst-ms``, longer than
that wait, woken together); and, with every core busy, the share of threads woken that ran at
once in place of a running one and how long they ran before they first stood still (a
thread per core burning, a newcomer woken among them), how long the others waited, and the
share of the threads they displaced that moved to a core freeing meanwhile (the threads the
newcomer left alone ending 0.2-0.9 ms after its wake-up). ``mmesim calibrate`` measures the same
with a shorter run of this probe (``mmesim.calibrate.placement``), and its profile keeps it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from mmesim.calibrate.placement import (FULL_BURST_S, LONG_PAUSE_S, WAITED_S, chain, freed_host, full_host, measure,
                                        measure_freed, measure_full, placement)
from mmesim.catalog import host_cpu
from mmesim.report.console import console, placement_text
from mmesim.triton import execlog

EDGES_MS = [0, 0.001, 1, 2, 5, 10, 20, 50, 100, 250, 1000]   # pause bins; the first: back to back


def by_pause(rows: list[tuple[float, float]], burst_s: float) -> list[dict]:
    """Per pause bin: rounds, share in which a worker waited, and the wait's median and p95 (ms)."""
    out = []
    for lo, hi in zip(EDGES_MS, EDGES_MS[1:]):
        walls = np.array([w for p, w in rows if lo <= p * 1e3 < hi])
        if len(walls) < 10:
            continue
        extra = walls - burst_s
        waited = extra[extra > WAITED_S]
        out.append({"pause_ms": [lo, hi], "rounds": len(walls), "waited_share": len(waited) / len(walls),
                    "wait_p50_ms": float(np.median(waited)) * 1e3 if len(waited) else None,
                    "wait_p95_ms": float(np.percentile(waited, 95)) * 1e3 if len(waited) else None})
    return out


def kernel_settings() -> dict:
    """What in this kernel's command line and idle driver bears on waking a core."""
    def read(path):
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None
    cmdline = read("/proc/cmdline") or ""
    keys = ("haltpoll", "sched", "idle", "nohz", "isolcpus")
    return {"cpu": host_cpu(), "cores": os.cpu_count(),
            "cmdline": [a for a in cmdline.split() if any(k in a for k in keys)],
            "cpuidle_driver": read("/sys/devices/system/cpu/cpuidle/current_driver"),
            "cpuidle_governor": read("/sys/devices/system/cpu/cpuidle/current_governor_ro")
            or read("/sys/devices/system/cpu/cpuidle/current_governor")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burst-ms", type=float, default=1.0)
    ap.add_argument("--max-pause-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=800)
    ap.add_argument("--long-burst-ms", type=float, default=4.0,
                    help="bursts longer than the kernel takes to move a displaced thread (its wait's ceiling)")
    ap.add_argument("--chain-s", type=float, default=8.0, help="seconds of the chain pattern (0: skip it)")
    ap.add_argument("--out", default="out/host_wakeups")
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        console.print("[red]one core: two workers cannot run at once here[/red]")
        return 2
    burst = args.burst_ms / 1e3
    with console.status(f"{args.rounds} rounds of two {args.burst_ms} ms bursts"):
        rows = measure(burst, args.max_pause_ms / 1e3, args.rounds)
    long_burst = args.long_burst_ms / 1e3
    with console.status(f"{args.rounds // 4} rounds of two {args.long_burst_ms} ms bursts (how long one waits)"):
        long_rows = measure(long_burst, LONG_PAUSE_S, args.rounds // 4, seed=1)
    full_rounds = max(20, args.rounds // 8)
    with console.status(f"{full_rounds} newcomers on a full host, then {full_rounds} with a core freeing"):
        full_rows = measure_full(full_rounds)
        full = {**full_host(full_rows), **freed_host(measure_freed(full_rounds))}
    bins, kernel = by_pause(rows, burst), kernel_settings()
    table = Table(title=f"two {args.burst_ms} ms bursts woken at once, {kernel['cores']} cores ({kernel['cpu']})")
    for col in ("pause ms", "rounds", "a worker waited", "wait p50 ms", "wait p95 ms"):
        table.add_column(col, justify="right")
    for b in bins:
        lo, hi = b["pause_ms"]
        table.add_row("0 (back to back)" if hi <= 0.001 else f"{lo:g}-{hi:g}", str(b["rounds"]),
                      f"{100 * b['waited_share']:.0f} %",
                      *(f"{b[k]:.2f}" if b[k] is not None else "-" for k in ("wait_p50_ms", "wait_p95_ms")))
    console.print(table)
    console.print(f"every core busy, a thread woken with a {FULL_BURST_S * 1e3:g} ms burst: it ran at once in "
                  f"{100 * full['full_share']:.0f} % of {len(full_rows)} rounds"
                  + (f", for {full['slice_s'] * 1e3:.2f} ms (median) before it first stood still" if full['slice_s']
                     else "")
                  + (f"; the others started {full['late_wait_s'] * 1e3:.2f} ms after their wake-up (median)"
                     if full['late_wait_s'] else "")
                  + f"; the longest wait of the threads it came among {full['displaced_wait_p50_s'] * 1e3:.2f} ms "
                    "(median)"
                  + (f"; with another core freeing meanwhile, {100 * full['freed_share']:.0f} % of "
                     f"{full['freed_rounds']} displaced threads moved there" if full['freed_share'] is not None else ""))
    pattern = placed = None
    if args.chain_s > 0:
        with console.status(f"{args.chain_s:g} s of four clients -> a relay -> four stubs"):
            pattern = chain(burst, args.chain_s)
        console.print(f"chain, {pattern['bursts_per_s']:.0f} bursts/s (wait: wall beyond CPU)\n"
                      + execlog.describe(pattern))
        placed = placement(pattern, long_rows, long_burst,
                           f"examples/host_wakeups.py on {kernel['cpu']} x {kernel['cores']}, "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", full)
        first, second = pattern["displaced"]["first"], pattern["displaced"]["second"]
        console.print(f"of two overlapping bursts the first waited in {100 * first['waited']:.0f} %, the second in "
                      f"{100 * (second['waited'] or 0):.0f} %")
        console.print(f"placement (--host-wakeups): {placement_text(placed)}")
    console.print(f"kernel: {', '.join(kernel['cmdline']) or 'nothing scheduler-related on its command line'}; "
                  f"idle driver {kernel['cpuidle_driver']} ({kernel['cpuidle_governor']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_wakeups.json").write_text(json.dumps(
        {"burst_ms": args.burst_ms, "kernel": kernel, "by_pause": bins, "chain": pattern, "full_host": full,
         "placement": placed},
        indent=2) + "\n")
    with open(out / "host_wakeups.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pause_s", "wall_s"])
        w.writerows(rows)
    console.print(f"wrote {out / 'host_wakeups.json'} and {out / 'host_wakeups.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
