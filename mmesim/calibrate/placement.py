"""How this host places a thread it wakes while another runs and a core idles: a probe of the
scheduler, no Triton involved (mmesim.profile.WakePlacement says why it matters).

Processor sharing, the simulator's model of a CPU-only host that was not probed, puts such a
thread on the idle core at once. This project's VMs do not (a kernel that packs vCPUs): a
quarter to a third of such threads ran first on the busy core, the thread they displaced
standing still. The probe asks the host in the pattern Triton's threads make (``chain``:
clients -> a relay -> stubs burning 1 ms each) and times two threads woken together with
bursts longer than the kernel takes to move one (``measure``), and a thread woken while every
core is busy (``measure_full``: does it run at once in place of another, and for how long;
if not, how long it waits; ``measure_freed``, for examples/host_wakeups.py: does the thread
it displaced move to a core that frees meanwhile; the simulator does not take that, section
10 of docs/accuracy-this-machine.md says why).
``mmesim calibrate`` runs it on a CPU before it starts the server, so that a profile carries
the placement of the host it was calibrated on; ``examples/host_wakeups.py`` runs it at
length and prints what it saw.

Its worker processes are forked: the probe times processes, and a forked worker starts at once
with nothing to import.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time

import numpy as np

from mmesim.catalog import host_cores, host_cpu
from mmesim.profile import WakePlacement
from mmesim.triton import execlog
from mmesim.triton.trace import overlap, quantiles

WAITED_S = 0.3e-3                                        # beyond the burst: one worker waited
GAP_S = 0.1e-3                                           # a burning thread's clock jumping this far: it stood still
LONG_PAUSE_S = 0.010                                     # pauses before the long bursts
LONG_BURST_S = 4e-3                                      # longer than the kernel takes to move a thread
mp = multiprocessing.get_context("fork")


def _burn(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def _worker(go, done, seconds: float) -> None:
    while True:
        go.acquire()
        _burn(seconds)
        done.release()


def _both_done(done) -> None:
    if not (done.acquire(timeout=10) and done.acquire(timeout=10)):
        raise RuntimeError("the scheduler probe's workers stopped answering")


def measure(burst_s: float, max_pause_s: float, rounds: int, seed: int = 0) -> list[tuple[float, float]]:
    """(pause s, wall s until both workers finished) per round: a quarter of the rounds back
    to back (pause 0, one after another), then the rest paced uniformly in 0-``max_pause_s``."""
    go, done = [mp.Semaphore(0) for _ in range(2)], mp.Semaphore(0)
    workers = [mp.Process(target=_worker, args=(g, done, burst_s), daemon=True) for g in go]
    for w in workers:
        w.start()
    rnd, rows = random.Random(seed), []
    try:
        for _ in range(20):                              # both workers started and warm
            for g in go:
                g.release()
            _both_done(done)
        for i in range(rounds):
            pause = 0.0 if i < rounds // 4 else rnd.uniform(0, max_pause_s)
            if pause:
                time.sleep(pause)
            began = time.monotonic()
            for g in go:
                g.release()
            _both_done(done)
            rows.append((pause, time.monotonic() - began))
    finally:
        for w in workers:
            w.kill()
    return rows


FULL_HOLD_S = 14e-3                                      # each core's thread burns this long
FULL_AFTER_S = 3e-3                                      # the newcomer wakes this far in: the others spread
FULL_PHASE_S = 1.5e-3                                    # and up to this much later: anywhere in a slice
FULL_BURST_S = 4e-3                                      # the newcomer's burst: longer than a slice


def _newcomer(go, done, released, seconds: float, out) -> None:
    """Burns ``seconds``; per round (delay from the driver's release to its start, CPU it ran
    before it had stood still ``WAITED_S`` in all: its whole burst if it never did)."""
    while True:
        go.acquire()
        began, cpu = time.monotonic(), time.thread_time()
        first = None
        while (used := time.thread_time() - cpu) < seconds:
            if first is None and time.monotonic() - began - used > WAITED_S:
                first = used
        out.put((began - released.value, seconds if first is None else first))
        done.release()


def _holder(go, done, released, seconds: float, out) -> None:
    while True:
        go.acquire()
        began, cpu = time.monotonic(), time.thread_time()
        _burn(seconds)
        out.put(time.monotonic() - began - (time.thread_time() - cpu))
        done.release()


def _crowd(rounds: int, seed: int, holder, holder_args: tuple = (), each_round=None) -> list[tuple]:
    """A full host, then a thread woken: one process per core runs ``holder(go, done,
    released, *holder_args, out)``, and ``FULL_AFTER_S`` in (time for the kernel to spread
    them) the driver wakes a newcomer that burns ``FULL_BURST_S``, after a pause of 0-10 ms in
    which the cores idle. It wakes up to ``FULL_PHASE_S`` later still, at any moment of the
    running threads' slices, as requests arrive: woken always at the same moment, a newcomer
    that did not run at once waited the same rest of a slice every time (1.17 ms, 3 ms in).
    ``each_round(rnd)`` runs before the holders start. Per round (the first five warm the
    workers up and are left out): the newcomer's delay before it started and the CPU it ran
    before it first stood still, and what each holder put."""
    n = host_cores()
    go, done, released = [mp.Semaphore(0) for _ in range(n + 1)], mp.Semaphore(0), mp.Value("d", 0.0, lock=False)
    starts, outs = mp.Queue(), mp.Queue()
    procs = [mp.Process(target=holder, args=(go[i], done, released, *holder_args, outs), daemon=True)
             for i in range(n)]
    procs.append(mp.Process(target=_newcomer, args=(go[n], done, released, FULL_BURST_S, starts), daemon=True))
    for p in procs:
        p.start()
    rnd, rows = random.Random(seed), []
    try:
        for i in range(rounds + 5):
            time.sleep(rnd.uniform(0, LONG_PAUSE_S))
            released.value = 0.0
            if each_round:
                each_round(rnd)
            for g in go[:n]:
                g.release()
            time.sleep(FULL_AFTER_S + rnd.uniform(0, FULL_PHASE_S))
            released.value = time.monotonic()
            go[n].release()
            for _ in range(n + 1):
                if not done.acquire(timeout=10):
                    raise RuntimeError("the scheduler probe's workers stopped answering")
            newcomer, held = starts.get(timeout=10), [outs.get(timeout=10) for _ in range(n)]
            if i >= 5:
                rows.append((*newcomer, held))
    finally:
        for p in procs:
            p.kill()
    return rows


def measure_full(rounds: int, seed: int = 2) -> list[tuple[float, float, float]]:
    """Every core busy, then a thread woken (``_crowd``), each core's thread burning
    ``FULL_HOLD_S``. Per round: the newcomer's delay before it started, the CPU it ran before
    it first stood still, and the longest wait of the threads it came among (s)."""
    return [(delay, first, max(held)) for delay, first, held in _crowd(rounds, seed, _holder, (FULL_HOLD_S,))]


def full_host(rows: list[tuple[float, float, float]]) -> dict:
    """The full host's figures as the simulator takes them: ``full_share``, the share of
    newcomers that started within ``WAITED_S`` of their wake-up (in place of a running
    thread: no core was idle); ``slice_s``, the median CPU those ran before they first stood
    still; ``late_wait_s``, the median delay of the others (None: none waited). Also, for the
    record, the median longest wait of the threads they came among."""
    at_once = [first for delay, first, _ in rows if delay <= WAITED_S]
    late = [delay for delay, *_ in rows if delay > WAITED_S]
    return {"full_share": round(len(at_once) / len(rows), 4),
            "slice_s": round(float(np.median(at_once)), 6) if at_once else None,
            "late_wait_s": round(float(np.median(late)), 6) if late else None,
            "displaced_wait_p50_s": round(float(np.median([held for *_, held in rows])), 6)}


FREED_AFTER_S = (0.2e-3, 0.9e-3)                          # a core frees this long after the wake-up: in a slice


def _early_holder(go, done, released, freed_after, seconds: float, out) -> None:
    """Burns ``seconds`` unless, ``freed_after`` past the newcomer's wake-up, it has run without
    a stop since that wake-up (the newcomer did not take its core): then it ends there, freeing
    its core. Per round: whether it ended so, when it ended, and the spells it stood still that
    ended after the wake-up (s, from the wake-up)."""
    while True:
        go.acquire()
        began = last = time.monotonic()
        stood, decided, early = [], False, False
        while (now := time.monotonic()) - began < seconds:
            if now - last > GAP_S:
                stood.append((last, now))
            last = now
            woke = released.value
            if not decided and woke > began and now >= woke + freed_after.value:
                decided = True
                if early := not any(end > woke for _, end in stood):
                    break
        woke = released.value
        out.put((early, now - woke, [(a - woke, b - woke) for a, b in stood if b > woke]))
        done.release()


def measure_freed(rounds: int, seed: int = 3) -> list[tuple[float, float, float]]:
    """A displaced thread when another core frees: as ``measure_full``, but each core's thread
    that the newcomer did not displace ends ``FREED_AFTER_S`` (uniformly) after the wake-up,
    while the displaced one stands still for the newcomer's slice. Per round in which the
    newcomer ran at once and one thread stood still from its wake-up: when a core freed, when
    the displaced one stood still and when it ran again (s from the wake-up)."""
    freed_after = mp.Value("d", 0.0, lock=False)
    rows = []
    for delay, _, holders in _crowd(rounds, seed, _early_holder, (freed_after, FULL_HOLD_S),
                                    lambda rnd: setattr(freed_after, "value", rnd.uniform(*FREED_AFTER_S))):
        stood = [spells[0] for early, _, spells in holders if not early and spells and spells[0][0] <= WAITED_S]
        freed = [end for early, end, _ in holders if early]
        if delay <= WAITED_S and freed and len(stood) == 1:
            rows.append((min(freed), *stood[0]))
    return rows


def freed_host(rows: list[tuple[float, float, float]]) -> dict:
    """``freed_share``: of the displaced threads that stood still when another core freed
    (``measure_freed``'s rows), the share that ran again by ``WAITED_S`` after it, moved to
    that core, where the others stood on for the newcomer's slice; None: no such round."""
    moved = [resumed <= freed + WAITED_S for freed, _, resumed in rows]
    return {"freed_share": round(float(np.mean(moved)), 4) if moved else None, "freed_rounds": len(moved)}


CLIENT_BURST_S = 0.15e-3                                 # the chain's client: its own work on a request
RELAY_BURST_S = 0.2e-3                                   # its relay: the server's handling of a request


def _client(i: int, pause_s: float, seconds: float, requests, answer, trips) -> None:
    rnd, end, took, cpu = random.Random(i), time.monotonic() + seconds, [], time.process_time()
    while time.monotonic() < end:
        time.sleep(rnd.uniform(0, pause_s))
        _burn(CLIENT_BURST_S)
        sent = time.monotonic()
        requests.put(i)
        answer.acquire()
        took.append(time.monotonic() - sent)
    requests.put(None)
    trips.put((took, time.process_time() - cpu - len(took) * CLIENT_BURST_S))


def _relay(requests, stubs, clients: int, spent) -> None:
    finished, relayed, cpu = 0, 0, time.process_time()
    while finished < clients:
        i = requests.get()
        if i is None:
            finished += 1
            continue
        _burn(RELAY_BURST_S)
        relayed += 1
        stubs[i % len(stubs)].put(i)
    for s in stubs:
        s.put(None)
    spent.put((relayed, time.process_time() - cpu - relayed * RELAY_BURST_S))


def _stub(inbox, answers, burst_s: float, out) -> None:
    bursts, spent = [], time.process_time()
    while (i := inbox.get()) is not None:
        began, cpu = time.monotonic(), time.thread_time()
        _burn(burst_s)
        bursts.append((began, time.monotonic(), time.thread_time() - cpu))
        answers[i].release()
    out.put((bursts, time.process_time() - spent - len(bursts) * burst_s))


def chain(burst_s: float = 1e-3, seconds: float = 8.0, n: int = 4, pause_s: float = 0.01) -> dict:
    """``n`` clients -> one relay -> ``n`` stubs, as Triton's requests go: per burst, whether it
    overlapped another and whether it waited for a core: ``mmesim.triton.execlog.breakdown``'s
    figures, with wall beyond CPU as the wait; and the clients' round trips (``round_trip_ms``,
    ``requests_per_s``) and the CPU each kind of process spent per request beyond its bursts
    (``cpu_beyond_ms``: queues, pipes, waking the next: what passing a request on costs)."""
    requests, inboxes, out, trips, spent = mp.Queue(), [mp.Queue() for _ in range(n)], mp.Queue(), mp.Queue(), \
        mp.Queue()
    answers = [mp.Semaphore(0) for _ in range(n)]
    procs = [mp.Process(target=_stub, args=(inboxes[j], answers, burst_s, out)) for j in range(n)]
    procs.append(mp.Process(target=_relay, args=(requests, inboxes, n, spent)))
    procs += [mp.Process(target=_client, args=(i, pause_s, seconds, requests, answers[i], trips)) for i in range(n)]
    for p in procs:
        p.start()
    try:       # a process that dies leaves its list unsent: a clear error, not a hang
        stubs = [out.get(timeout=seconds + 60) for _ in range(n)]
        clients = [trips.get(timeout=10) for _ in range(n)]
        relayed, relay_cpu = spent.get(timeout=10)
    except queue.Empty:
        raise RuntimeError(f"the scheduler probe's processes did not finish within {seconds + 60:g} s") from None
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    bursts = sorted(b for mine, _ in stubs for b in mine)
    took = np.array([t for mine, _ in clients for t in mine]) * 1e3
    per = lambda cpu, count: round(1e3 * cpu / max(count, 1), 4)    # noqa: E731
    beyond = {"client": per(sum(c for _, c in clients), len(took)), "relay": per(relay_cpu, relayed),
              "stub": per(sum(c for _, c in stubs), len(bursts))}
    start, end, cpu = (np.array(col) for col in zip(*bursts))
    wall = (end - start) * 1e3
    log = {"wall": wall, "cpu": cpu * 1e3, "wait": wall - cpu * 1e3, "overlap": overlap(start, end)}
    return {"bursts_per_s": len(bursts) / seconds, "requests_per_s": len(took) / seconds,
            "round_trip_ms": quantiles(took), "cpu_beyond_ms": beyond, **execlog.breakdown(log),
            "displaced": displaced(start, end, log["wait"])}


def displaced(start: np.ndarray, end: np.ndarray, wait_ms: np.ndarray) -> dict:
    """Of two overlapping bursts, which waited for a core: the one running when the other
    started (``first``), or the one that started while it ran (``second``); each: how many, and
    the share that waited more than execlog's 0.2 ms. (Sorted by start.)"""
    before = np.maximum.accumulate(np.concatenate([[-np.inf], end[:-1]]))   # latest end of those started earlier
    second = before > start
    overtaken = np.zeros(len(start), bool)          # the next burst started before this one ended
    overtaken[:-1] = start[1:] < end[:-1]
    first = overtaken & ~second
    waited = wait_ms > execlog.LONG_WAIT_MS
    return {name: {"n": int(sel.sum()), "waited": float(waited[sel].mean()) if sel.any() else None}
            for name, sel in (("first", first), ("second", second))}


def placement(pattern: dict, long_rows: list[tuple[float, float]], long_burst_s: float, source: str,
              full: dict | None = None) -> dict:
    """The host's wake-up placement as the simulator takes it (mmesim.endpoint.WakePlacement):
    ``packed_share``, of two overlapping bursts in the chain pattern, the share in which the
    one already running waited for a core (the newcomer had taken its core, the other idle);
    ``moved_after_s``, the p95 of the wait of two bursts woken together, longer than the move
    (``long_rows``): the longest a displaced thread stands still; with ``full`` (``full_host``
    of ``measure_full``'s rows), the full host's ``full_share``, ``slice_s`` (nobody ran at
    once: share 0, and the newcomer's burst for the moot slice) and ``late_wait_s``."""
    first = pattern["displaced"]["first"]
    if not first["n"]:
        raise ValueError("no two bursts of the chain overlapped: give it more --chain-s")
    waits = [w - long_burst_s for _, w in long_rows if w - long_burst_s > WAITED_S]
    moved = float(np.percentile(waits, 95)) if waits else long_burst_s   # nobody waited: the move is moot
    busy = {"full_share": full["full_share"], "slice_s": full["slice_s"] or FULL_BURST_S,
            "late_wait_s": full["late_wait_s"]} if full else {}
    return {"packed_share": round(first["waited"], 4), "moved_after_s": round(moved, 6), **busy, "source": source}


def measure_placement(chain_s: float = 4.0, long_rounds: int = 120, burst_s: float = 1e-3,
                      source: str = "mmesim calibrate", full_rounds: int = 80) -> WakePlacement | None:
    """This host's placement, as a profile keeps it: ``chain_s`` seconds of the chain pattern,
    ``long_rounds`` pairs of long bursts, ``full_rounds`` newcomers on a full host (about 8 s
    in all with the defaults). None on a single core, where no thread can be placed beside
    another."""
    if host_cores() < 2:
        return None
    long_rows = measure(LONG_BURST_S, LONG_PAUSE_S, long_rounds, seed=1)
    full = full_host(measure_full(full_rounds))
    placed = placement(chain(burst_s, chain_s), long_rows, LONG_BURST_S,
                       f"{source}'s probe on {host_cpu()} x {host_cores()}, "
                       f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", full)
    return WakePlacement(**placed)
