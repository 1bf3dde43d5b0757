"""Does the simulator's placement of woken threads hold on this host, without Triton?

The placement (mmesim.profile.WakePlacement: a thread woken beside a running one taking its
core, a newcomer on a full host running at once in place of another or after the rest of a
slice) was measured by probes and checked on Triton runs, where the host's drift and the
server's own costs blur it. This example asks it of a load with nothing else in it: the chain
of ``mmesim.calibrate.placement`` (four closed-loop clients pausing 0-P ms and spending 0.15 ms
of CPU on each request -> one relay, 0.2 ms -> four stubs, 1 ms; separate processes passing
requests through queues and semaphores, as Triton's threads do) is measured at a few paces,
then simulated on the same cores (``mmesim.sim.cores``) with this host's placement, probed
right before, and with processor sharing; the CPU each kind of process spends per request
beyond its bursts (the queues, pipes and wake-ups: what passing a request on costs) is
measured in the same run and charged where it falls (the client's before its timer starts,
the relay's with its burst, the stub's after its burst). What the simulation leaves out, on
purpose: the time a woken process takes to start on an idle core, which lengthens every round
trip a little (the median, not the tail).

    python examples/host_chain.py [--pauses-ms 10,4,2] [--seconds 8] [--out out/host_chain]

It prints, per pace, the clients' requests a second and round-trip p50 / p95 / p99 and the
share of stub bursts that waited for a core, measured against both simulations, and writes
them as JSON and CSV. On this project's 2-vCPU AMD EPYC VM (2026-12-07 02:24-02:26 UTC, two runs,
pauses 0-10, 0-4 and 0-2 ms): with the host's placement, requests a second +1 to +4 %,
round-trip p95 -1 to +5 %, p99 0 to +12 %, the median 13-18 % short; with processor sharing
p95 29-40 % short and requests +5 to +17 % (docs/accuracy-this-machine.md, section 10). The
stubs waited for a core half as often as simulated (13-32 % against 28-61 %): the kernel
delays the short bursts more and the long ones less than a thread drawn at random.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import simpy
from rich.table import Table

from mmesim.calibrate.placement import CLIENT_BURST_S, RELAY_BURST_S, chain, measure_placement
from mmesim.catalog import host_cores, host_cpu
from mmesim.report.console import console, placement_text
from mmesim.sim.cores import Cores, PackedCores
from mmesim.sim.random import Stream
from mmesim.triton.execlog import LONG_WAIT_MS

STUB_BURST_S = 1e-3
FIGURES = ("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "stubs_waited")


def simulate_chain(pause_s: float, placement, beyond_ms: dict, seconds: float = 8.0, n: int = 4,
                   cores: int | None = None, seed: int = 0) -> dict:
    """The chain on ``cores`` simulated cores (this host's by default) placed by ``placement``
    (None: processor sharing), each process's CPU beyond its bursts (``beyond_ms``, per
    request) charged with them: the same figures as ``measured``."""
    env = simpy.Environment()
    cores = cores or host_cores()
    cpu = PackedCores(env, cores, placement, Stream(np.random.default_rng(seed))) if placement else Cores(env, cores)
    pauses = np.random.default_rng(seed + 1)
    to_relay, to_stub = simpy.Store(env), [simpy.Store(env) for _ in range(n)]
    trips, walls = [], []
    extra = {k: v / 1e3 for k, v in beyond_ms.items()}

    def burn(work: float):
        done = env.event()
        cpu.run(work, 1, done.succeed, None)
        return done

    def client(i: int):
        while env.now < seconds:
            yield env.timeout(pauses.uniform(0, pause_s))
            yield burn(CLIENT_BURST_S + extra["client"])
            sent, answer = env.now, env.event()
            to_relay.put((i, answer))
            yield answer
            trips.append(env.now - sent)

    def relay():
        while True:
            i, answer = yield to_relay.get()
            yield burn(RELAY_BURST_S + extra["relay"])
            to_stub[i].put(answer)

    def stub(j: int):
        while True:
            answer = yield to_stub[j].get()
            began = env.now
            yield burn(STUB_BURST_S)
            walls.append(env.now - began)
            if extra["stub"]:
                yield burn(extra["stub"])
            answer.succeed()

    for i in range(n):
        env.process(client(i))
        env.process(stub(i))
    env.process(relay())
    env.run(until=seconds)
    ms = np.array(trips) * 1e3
    waited = (np.array(walls) - STUB_BURST_S) * 1e3 > LONG_WAIT_MS
    return {"requests_per_s": len(ms) / seconds, **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)},
            "stubs_waited": float(waited.mean())}


def measured(pattern: dict) -> dict:
    """``chain``'s run in the same figures as ``simulate_chain``."""
    trips = pattern["round_trip_ms"]
    return {"requests_per_s": pattern["requests_per_s"], "p50_ms": trips["p50"], "p95_ms": trips["p95"],
            "p99_ms": trips["p99"], "stubs_waited": pattern["all"]["waited"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pauses-ms", default="10,4,2", help="the clients' longest pause, one chain run each")
    ap.add_argument("--seconds", type=float, default=8.0, help="each chain run")
    ap.add_argument("--out", default="out/host_chain")
    args = ap.parse_args(argv)
    try:
        pauses = [float(p) / 1e3 for p in args.pauses_ms.split(",") if p.strip()]
    except ValueError:
        ap.error(f"--pauses-ms: milliseconds separated by commas, not {args.pauses_ms!r}")
    if not pauses or min(pauses) < 0 or args.seconds <= 0:
        ap.error("--pauses-ms needs pauses >= 0 and --seconds a time > 0")
    if host_cores() < 2:
        console.print("[red]one core: no thread can be placed beside another here[/red]")
        return 2
    with console.status("this host's placement of woken threads (about 8 s)"):
        placed = measure_placement(source="examples/host_chain.py")
    console.print(f"placement: {placement_text(placed.model_dump())}")
    rows = []
    for pause in pauses:
        with console.status(f"the chain, pauses 0-{pause * 1e3:g} ms, {args.seconds:g} s"):
            pattern = chain(STUB_BURST_S, args.seconds, pause_s=pause)
        beyond = pattern["cpu_beyond_ms"]
        rows.append({"pause_ms": pause * 1e3, "cpu_beyond_ms": beyond, "measured": measured(pattern),
                     "with_placement": simulate_chain(pause, placed, beyond, args.seconds),
                     "processor_sharing": simulate_chain(pause, None, beyond, args.seconds)})
    table = Table(title=f"the chain on {host_cpu()} x {host_cores()}: measured / simulated with the host's placement "
                        "/ with processor sharing")
    for col in ("pauses", "requests/s", "round trip p50 ms", "p95 ms", "p99 ms", "stubs waited"):
        table.add_column(col, justify="right")
    for r in rows:
        m, a, b = r["measured"], r["with_placement"], r["processor_sharing"]
        cells = [f"{m[k]:.{1 if k == 'requests_per_s' else 2}f} / {a[k] / m[k] - 1:+.0%} / {b[k] / m[k] - 1:+.0%}"
                 for k in FIGURES[:4]]
        cells.append(f"{m['stubs_waited']:.0%} / {a['stubs_waited']:.0%} / {b['stubs_waited']:.0%}")
        table.add_row(f"0-{r['pause_ms']:g} ms", *cells)
    console.print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_chain.json").write_text(json.dumps(
        {"host": f"{host_cpu()} x {host_cores()}", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "placement": placed.model_dump(), "runs": rows}, indent=2) + "\n")
    with open(out / "host_chain.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pause_ms", "source", *FIGURES])
        for r in rows:
            for source in ("measured", "with_placement", "processor_sharing"):
                w.writerow([r["pause_ms"], source, *(round(r[source][k], 5) for k in FIGURES)])
    console.print(f"wrote {out / 'host_chain.json'} and {out / 'host_chain.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
