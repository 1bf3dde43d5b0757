"""What cools a model's execution during a pause, and what warms it again? Plain processes,
one thread each, no Triton.

A profile's warmth curve (``host_warmth``) charges an execution by how long its copy idled.
Under load the copies' executions cost less than that curve says, by an amount that moves
from round to round (examples/warmth_under_load.py). Two mechanisms would key it on
different things, so this asks which one acts here:

- ``halt``: the copy under test, pinned to the first vCPU, pauses and executes. Alone, the vCPU
  halts during each pause (a VM exit: the hypervisor may run another tenant on the core); with a
  spinner of the lowest priority (SCHED_IDLE) on the same vCPU it never halts, yet the spinner
  yields the moment the copy wakes; with a spinner on the other vCPU the machine is busy but
  this vCPU halts. If halting cooled the execution, the spinner here would keep it warm. The
  halts are counted from the kernel's cpuidle statistics (none where there are none).
- ``neighbour``: the copy under test idles 2, 10 or 50 ms, and after 10 or 50 ms, just before
  it executes (about a millisecond), another process may execute: the same model with its own
  weights (``model``) or a foreign kernel of about the same length (``numpy``, a matrix
  product), on the same vCPU or the other; or three copies of the model one after another
  over the idle spell (``3 models``, as under load: their weights could evict the copy's).
  What a neighbour saves of the cold cost (the copy's cost after the idle alone, less its cost
  after 2 ms) is what another copy's execution warms for this one: the code and state copies
  share, not the weights each holds.

    python examples/what_cools.py [--model tiny-bert] [--rounds 4] [--per-block 120]
                                  [--executions 2400] [--out out/what_cools]

Writes what_cools.json (per probe, condition and pause: executions, median CPU ms, halts;
each neighbour's share of the cold cost saved) and what_cools.csv (one row per execution).
Run it on a quiet host: other work on the two vCPUs is a neighbour too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress
from rich.table import Table

from mmesim.catalog import host_cpu
from mmesim.errors import ConfigError
from mmesim.report.console import console
from mmesim.triton.zoo import builtin

HALT_PAUSES_MS = (0.5, 2, 5, 10, 20, 50)
HALT_CONDITIONS = ("alone", "spinner here", "spinner there")
NEIGHBOUR_IDLE_MS = (2, 10, 50)
NEIGHBOURS = ("none", "model here", "model there", "3 models", "numpy here", "numpy there")
# which processes each neighbour condition runs, in order over the idle spell (the last just before)
RUNS = {"model here": ["model here"], "model there": ["model there"], "numpy here": ["numpy here"],
        "numpy there": ["numpy there"], "3 models": ["model there", "model third", "model here"]}
BEFORE_S = 0.001          # a neighbour ends about this long before the copy under test starts
MIN_EXECUTIONS = 5
HERE, THERE = 0, 1        # the copy under test's vCPU, and the other


def halts(cpu: int) -> int | None:
    """Times ``cpu`` has entered an idle state that halts (cpuidle states past POLL), or None
    where the kernel exposes no cpuidle statistics."""
    root = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpuidle")
    try:
        return sum(int((s / "usage").read_text()) for s in sorted(root.glob("state*"))
                   if (s / "name").read_text().strip() != "POLL")
    except (OSError, ValueError):
        return None


def forward(model_name: str, seed: int):
    """The built-in model ``model_name`` with random weights of its own (``seed``), one thread,
    and a call that runs one batch-1 forward pass."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    spec, build = builtin(model_name)
    model = build()
    inputs = [torch.from_numpy(a) for a in spec.sample(1, seed)]

    def run():
        with torch.inference_mode():
            model(*inputs)
    for _ in range(30):
        run()
    return run


def _matrix_product(seconds: float):
    """A foreign kernel of about ``seconds``: float32 matrix products over ~1 MB."""
    a, b = np.random.rand(2, 300, 300).astype(np.float32)
    started, n = time.thread_time(), 0
    while time.thread_time() - started < 0.05:
        a @ b
        n += 1
    reps = max(1, round(seconds / ((time.thread_time() - started) / n)))

    def run():
        for _ in range(reps):
            a @ b
    return run


def _child(cpu: int, body) -> int:
    """Fork a process pinned to ``cpu`` that runs ``body()``; its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {cpu})
            body()
        finally:
            os._exit(0)
    return pid


def _spin() -> None:
    while True:
        pass


def _spinner(cpu: int, lowest: bool) -> int:
    """A busy loop pinned to ``cpu``, stopped until continued; ``lowest``: SCHED_IDLE, it runs
    only when nothing else wants the vCPU, so the vCPU never halts but yields at once."""
    def body():
        if lowest:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        _spin()
    pid = _child(cpu, body)
    os.kill(pid, signal.SIGSTOP)
    return pid


def _neighbour(cpu: int, make) -> tuple[int, int, int]:
    """A process pinned to ``cpu`` that runs ``make()``'s call once per byte it reads and answers
    a byte when done: (pid, write end, read end). It runs until killed."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()

    def body():
        run = make()
        os.write(done_w, b"r")                 # ready
        while True:
            os.read(go_r, 1)
            run()
            os.write(done_w, b"d")
    pid = _child(cpu, body)
    os.read(done_r, 1)
    return pid, go_w, done_r


def _timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return (time.thread_time() - cpu) * 1e3, (time.perf_counter() - wall) * 1e3


def probe_halt(run, rounds: int, per_block: int, rnd: random.Random, advance=lambda: None) -> list[dict]:
    """The ``halt`` probe: blocks of ``per_block`` executions after pauses drawn from
    HALT_PAUSES_MS, each condition once per round in a shuffled order (so that the host's drift
    moves all alike)."""
    spinners = {"spinner here": _spinner(HERE, lowest=True), "spinner there": _spinner(THERE, lowest=False)}
    rows = []
    try:
        for r in range(rounds):
            for cond in rnd.sample(HALT_CONDITIONS, len(HALT_CONDITIONS)):
                if cond in spinners:
                    os.kill(spinners[cond], signal.SIGCONT)
                time.sleep(0.05)
                for _ in range(per_block):
                    pause = rnd.choice(HALT_PAUSES_MS)
                    before = halts(HERE)
                    time.sleep(pause / 1e3)
                    after = halts(HERE)
                    cpu, wall = _timed(run)
                    rows.append({"probe": "halt", "round": r, "condition": cond, "idle_ms": pause, "before_ms": None,
                                 "cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4),
                                 "halts": None if before is None or after is None else after - before})
                    advance()
                if cond in spinners:
                    os.kill(spinners[cond], signal.SIGSTOP)
    finally:
        for pid in spinners.values():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return rows


def probe_neighbour(run, model_name: str, executions: int, rnd: random.Random, advance=lambda: None) -> list[dict]:
    """The ``neighbour`` probe: each execution after an idle drawn from NEIGHBOUR_IDLE_MS, with
    a neighbour drawn from NEIGHBOURS executing just before it (``none``: the copy alone)."""
    cpu_ms = float(np.median([_timed(run)[0] for _ in range(20)]))
    makers = {"model": lambda: forward(model_name, seed=1), "numpy": lambda: _matrix_product(cpu_ms / 1e3)}
    procs = {f"{kind} {where}": _neighbour(cpu, makers[kind])
             for kind in makers for where, cpu in (("here", HERE), ("there", THERE))}
    procs["model third"] = _neighbour(HERE, lambda: forward(model_name, seed=2))
    rows, last_end = [], time.perf_counter()
    try:
        for _ in range(executions):
            idle = rnd.choice(NEIGHBOUR_IDLE_MS) / 1e3
            # after the shortest idle, the reference, no neighbour: it would lengthen the idle
            who = rnd.choice(NEIGHBOURS) if idle > min(NEIGHBOUR_IDLE_MS) / 1e3 else "none"
            neighbour_end = None
            runs = RUNS.get(who, [])
            for i, name in enumerate(runs):
                _, go, done = procs[name]
                # spread over the idle spell; the last runs about one of our executions, ending
                # BEFORE_S before we start
                _sleep_until(last_end + idle * (i + 1) / len(runs) - BEFORE_S - 2 * cpu_ms / 1e3)
                os.write(go, b"g")
                os.read(done, 1)
                neighbour_end = time.perf_counter()
            if neighbour_end is not None:
                _sleep_until(neighbour_end + BEFORE_S)
            _sleep_until(last_end + idle)
            start = time.perf_counter()
            cpu, wall = _timed(run)
            rows.append({"probe": "neighbour", "round": None, "condition": who,
                         "idle_ms": round((start - last_end) * 1e3, 3), "drawn_idle_ms": idle * 1e3,
                         "before_ms": None if neighbour_end is None else round((start - neighbour_end) * 1e3, 3),
                         "cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4), "halts": None})
            last_end = time.perf_counter()
            advance()
    finally:
        for pid, go, done in procs.values():      # (each holds the others' pipes too: no EOF reaches it)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(go), os.close(done)
    return rows


def _sleep_until(t: float) -> None:
    left = t - time.perf_counter()
    if left > 0:
        time.sleep(left)


def cooling(rows: list[dict]) -> dict:
    """Per probe, condition and pause (the drawn idle for the neighbour probe): executions,
    median CPU ms (None under MIN_EXECUTIONS) and the median of the halts during the pause."""
    out: dict = {}
    for row in rows:
        key = row.get("drawn_idle_ms", row["idle_ms"])
        out.setdefault(row["probe"], {}).setdefault(row["condition"], {}).setdefault(key, []).append(row)
    for probe, conds in out.items():
        for cond, by_idle in conds.items():
            for idle, group in sorted(by_idle.items()):
                cpu = [g["cpu_ms"] for g in group]
                counted = [g["halts"] for g in group if g["halts"] is not None]
                by_idle[idle] = {"executions": len(group),
                                 "cpu_ms": float(np.median(cpu)) if len(cpu) >= MIN_EXECUTIONS else None,
                                 "halts": float(np.median(counted)) if counted else None}
            conds[cond] = dict(sorted(by_idle.items()))
    return out


def cold_cost_saved(by_idle: dict, reference: dict) -> dict:
    """For each idle past the shortest: the share of the reference's cold cost (its cost after
    that idle less its cost after the shortest) that this condition does not pay; None where a
    median is missing or the reference does not cool."""
    short = min(reference)
    out = {}
    for idle in sorted(reference):
        if idle == short:
            continue
        ref, warm, here = reference[idle]["cpu_ms"], reference[short]["cpu_ms"], by_idle.get(idle, {}).get("cpu_ms")
        out[idle] = (round((ref - here) / (ref - warm), 3)
                     if None not in (ref, warm, here) and ref - warm > 0 else None)
    return out


def _table(title: str, first: str, pauses_ms, rows: dict[str, list[str]]) -> Table:
    table = Table(title=title)
    table.add_column(first)
    for p in pauses_ms:
        table.add_column(f"{p:g} ms", justify="right")
    for label, cells in rows.items():
        table.add_row(label, *cells)
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-bert", help="a built-in model (mmesim.triton.zoo)")
    ap.add_argument("--rounds", type=int, default=4, help="halt probe: rounds of one block per condition")
    ap.add_argument("--per-block", type=int, default=120, help="halt probe: executions per block")
    ap.add_argument("--executions", type=int, default=2400, help="neighbour probe: executions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/what_cools")
    args = ap.parse_args(argv)
    try:
        builtin(args.model)
    except ConfigError as exc:                            # a name it lacks: the names it has
        console.print(f"[red]{exc}[/red]")
        return 2
    if not {HERE, THERE} <= os.sched_getaffinity(0):
        console.print(f"[red]needs vCPUs {HERE} and {THERE} (this process may run on "
                      f"{sorted(os.sched_getaffinity(0))}): the neighbours run beside the copy[/red]")
        return 2
    allowed = os.sched_getaffinity(0)
    rnd = random.Random(args.seed)
    rows: list[dict] = []
    try:
        os.sched_setaffinity(0, {HERE})
        run = forward(args.model, seed=0)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("halt probe", total=args.rounds * len(HALT_CONDITIONS) * args.per_block)
            rows += probe_halt(run, args.rounds, args.per_block, rnd, lambda: progress.advance(task))
            task = progress.add_task("neighbour probe", total=args.executions)
            rows += probe_neighbour(run, args.model, args.executions, rnd, lambda: progress.advance(task))
    finally:
        os.sched_setaffinity(0, allowed)
    summary = cooling(rows)
    halt, neighbour = summary["halt"], summary["neighbour"]
    saved = {"halt": {c: cold_cost_saved(halt[c], halt["alone"]) for c in halt if c != "alone"},
             "neighbour": {c: cold_cost_saved(neighbour[c], neighbour["none"]) for c in neighbour if c != "none"}}
    def cell(c: dict, note: str | None = None) -> str:
        return "-" if c.get("cpu_ms") is None else f"{c['cpu_ms']:.2f}" + (f" ({note})" if note else "")
    halts_of = {cond: [halt[cond].get(p, {}) for p in HALT_PAUSES_MS] for cond in HALT_CONDITIONS}
    console.print(_table(f"{args.model}: median CPU ms of one execution after a pause on vCPU {HERE} (halts during "
                         f"the pause), {host_cpu()}", "condition", HALT_PAUSES_MS,
                         {cond: [cell(c, None if c.get("halts") is None else f"{c['halts']:g}") for c in cells]
                          for cond, cells in halts_of.items()}))
    console.print(_table(f"{args.model}: median CPU ms after the copy's idle, a neighbour executing "
                         f"{BEFORE_S * 1e3:g} ms before it (share of the cold cost saved)", "neighbour",
                         NEIGHBOUR_IDLE_MS,
                         {cond: [cell(neighbour.get(cond, {}).get(i, {}),
                                      None if (x := saved["neighbour"].get(cond, {}).get(i)) is None
                                      else f"{100 * x:+.0f} %") for i in NEIGHBOUR_IDLE_MS]
                          for cond in NEIGHBOURS}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "what_cools.json").write_text(json.dumps(
        {"model": args.model, "host_cpu": host_cpu(), "cores": os.cpu_count(),
         "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "halts_counted": rows[0]["halts"] is not None if rows else False,
         "by_condition": summary, "cold_cost_saved": saved}, indent=1) + "\n")
    with (out / "what_cools.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["probe", "round", "condition", "idle_ms", "drawn_idle_ms", "before_ms",
                                          "cpu_ms", "wall_ms", "halts"])
        w.writeheader()
        w.writerows(rows)
    console.print(f"wrote {out / 'what_cools.json'} and what_cools.csv (one row per execution)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
