"""The runnable examples keep running, and say what they claim."""

import json

import pytest
from conftest import load_example as load


def test_heterogeneous_endpoint_thrashes_on_one_instance_not_two(tmp_path):
    (one, run1, s1), (two, run2, s2) = load("heterogeneous").compare(seed=0, out=tmp_path)
    # 60 copies need about twice one A10G's memory: one instance loads and evicts all the
    # time (as fast as its four load threads go) and sheds load; two hold every copy after
    # its first load
    assert s1.unloads > 300 and s1.failures > 0.5 * s1.requests
    assert s2.unloads == 0 and s2.loads == 60 and s2.failures == 0
    assert s2.p99_ms < s1.p50_ms
    assert (tmp_path / "2-instance" / "summary.json").is_file()
    assert {e.instance for e in run2.events if e.kind == "load"} == {0, 1}


def test_cold_burst_costs_grow_with_the_burst():
    burst = load("cold_burst").burst
    one, eight = (burst("resnet50-pytorch-a10g", "ml.g5.2xlarge", n) for n in (1, 8))
    assert one["load_s"] == 1.5 and one["ok"] == 1 and eight["ok"] == 8     # alone: the profile's load_s
    assert eight["download_s"] > one["download_s"] and eight["load_s"] > one["load_s"]
    assert eight["last_ready_s"] > one["last_ready_s"] + one["load_s"]      # four load threads: two rounds
    # one load thread: the eighth waits for seven whole loads
    serial = burst("resnet50-pytorch-a10g", "ml.g5.2xlarge", 8, load_parallelism=1)
    assert serial["last_ready_s"] > one["download_s"] + 8 * one["load_s"] - 1e-6


def test_host_wakeups_bins_rounds_by_pause_and_times_the_wait(tmp_path):
    hw = load("host_wakeups")
    burst = 1e-3
    # synthetic rounds: back to back all in parallel; paced 20-50 ms, one in two waited 0.5 ms
    rows = [(0.0, burst + 5e-5)] * 40 + [(0.03, burst + (5e-4 if i % 2 else 1e-5)) for i in range(40)]
    bins = {tuple(b["pause_ms"]): b for b in hw.by_pause(rows, burst)}
    assert set(bins) == {(0, 0.001), (20, 50)}
    assert bins[(0, 0.001)]["waited_share"] == 0 and bins[(0, 0.001)]["wait_p50_ms"] is None
    assert bins[(20, 50)]["rounds"] == 40 and bins[(20, 50)]["waited_share"] == 0.5
    assert abs(bins[(20, 50)]["wait_p50_ms"] - 0.5) < 1e-9
    # the real probe: two workers, a few rounds; no round ends before one burst has run
    assert hw.main(["--burst-ms", "0.5", "--max-pause-ms", "2", "--rounds", "40", "--chain-s", "1",
                    "--out", str(tmp_path)]) == 0
    walls = [float(r.split(",")[1]) for r in (tmp_path / "host_wakeups.csv").read_text().splitlines()[1:]]
    assert len(walls) == 40 and min(walls) >= 0.5e-3
    result = json.loads((tmp_path / "host_wakeups.json").read_text())
    assert sum(b["rounds"] for b in result["by_pause"]) <= 40
    # the chain: about a second of four clients each pausing up to 10 ms, every burst counted once
    alone, overlapped = result["chain"]["alone"], result["chain"]["overlapped"]
    assert 50 < alone["n"] + overlapped["n"] == result["chain"]["all"]["n"] < 4 * 1000 / 0.5
    assert 0 <= overlapped["waited"] <= 1
    # every request one stub burst; a round trip holds at least the relay's 0.2 ms and the burst
    assert result["chain"]["requests_per_s"] == result["chain"]["bursts_per_s"]
    assert result["chain"]["round_trip_ms"]["p50"] >= 0.7 and min(result["chain"]["cpu_beyond_ms"].values()) >= 0
    # what the simulator takes (--host-wakeups): read back as the endpoint's WakePlacement
    from mmesim.endpoint import read_host_wakeups
    placed = read_host_wakeups(tmp_path / "host_wakeups.json")
    assert placed.packed_share == result["placement"]["packed_share"]
    assert 0 <= placed.packed_share <= 1 and 0 < placed.moved_after_s < 0.5 and "host_wakeups.py" in placed.source
    # a thread woken on a full host: the share that ran at once, and for how long, as the placement takes it
    assert placed.full_share == result["full_host"]["full_share"] and 0 < placed.slice_s <= 4e-3
    assert placed.late_wait_s == result["full_host"]["late_wait_s"]     # the others' wait (None: all at once)
    # and of the threads a newcomer displaced, the share that moved to a core freeing meanwhile
    # (printed and kept, not taken by the simulator: docs/accuracy-this-machine.md, section 10)
    freed = result["full_host"]
    assert 0 <= freed["freed_rounds"] <= 20 and (freed["freed_share"] is None) == (freed["freed_rounds"] == 0)
    assert freed["freed_share"] is None or 0 <= freed["freed_share"] <= 1


def test_warmth_under_load_bins_each_execution_by_its_own_copys_idle():
    """Two copies interleaved: each execution's idle is since its own copy's previous one
    ended, not since any execution (the machine's); a copy's first has none; a bin with
    fewer than five executions has no median; the busy share is how much of that idle spell
    the other copy executed."""
    import numpy as np
    by_copy_idle = load("warmth_under_load").by_copy_idle
    starts, models, cpu = [], [], []
    t = 0.0
    for i in range(40):              # a and b in turn, each 1 ms long, 2 ms apart: 3 ms idle per copy
        starts.append(t)
        models.append("m-v0" if i % 2 == 0 else "m-v1")
        cpu.append(1.0 if i < 22 else 2.0)
        t += 2.0
    starts.append(t + 30.0)          # a's last after 30 + 3 ms
    models.append("m-v0")
    cpu.append(9.0)
    log = {"start_ns": np.array(starts) * 1e6, "end_ns": (np.array(starts) + 1.0) * 1e6, "model": models,
           "cpu": np.array(cpu)}
    bins = {tuple(b["idle_ms"]): b for b in by_copy_idle(log)}
    assert bins[(2, 5)]["executions"] == 38 and bins[(2, 5)]["cpu_ms"] == 1.0     # the median of 20 x 1, 18 x 2
    assert bins[(20, 50)] == {"idle_ms": [20, 50], "executions": 1, "cpu_ms": None}
    assert bins[(0, 2)]["executions"] == 0 and sum(b["executions"] for b in bins.values()) == 39
    # the machine's activity over each idle spell: the other copy ran 1 ms of each 3 ms, and 1 of the last 33
    ctx = load("warmth_under_load").copy_idle(log)
    assert ctx["busy"][:-1] == pytest.approx([1 / 3] * 38) and ctx["busy"][-1] == pytest.approx(1 / 33)
    assert ctx["idle_ms"][-1] == pytest.approx(33.0) and ctx["model"][-1] == "m-v0"
    late = {tuple(b["idle_ms"]): b for b in by_copy_idle(log, where=lambda c: c["busy"] < 0.1)}
    assert sum(b["executions"] for b in late.values()) == 1 and late[(20, 50)]["executions"] == 1


def test_what_cools_medians_by_condition_and_the_share_of_the_cold_cost_a_neighbour_saves():
    wc = load("what_cools")
    rows = [{"probe": "neighbour", "condition": c, "idle_ms": i + 0.01, "drawn_idle_ms": i, "cpu_ms": cpu,
             "halts": None} for c, i, cpu, n in (("none", 2, 1.0, 6), ("none", 50, 2.0, 6), ("model here", 50, 1.5, 6),
                                                 ("numpy here", 50, 2.0, 5), ("model there", 50, 1.2, 4))
            for _ in range(n)]
    rows += [{"probe": "halt", "condition": "alone", "idle_ms": 20, "cpu_ms": 1.0 + k / 10, "halts": k % 2}
             for k in range(5)]
    summary = wc.cooling(rows)
    none = summary["neighbour"]["none"]
    assert list(none) == [2, 50] and none[50] == {"executions": 6, "cpu_ms": 2.0, "halts": None}
    assert summary["halt"]["alone"][20] == {"executions": 5, "cpu_ms": 1.2, "halts": 0.0}
    assert summary["neighbour"]["model there"][50]["cpu_ms"] is None            # four: no median
    # the cold cost after 50 ms is 1 ms: the same model just before saves half, a foreign kernel none
    saved = {c: wc.cold_cost_saved(summary["neighbour"][c], none) for c in ("model here", "numpy here", "model there")}
    assert saved == {"model here": {50: 0.5}, "numpy here": {50: 0.0}, "model there": {50: None}}
    assert wc.main(["--model", "no-such-model"]) == 2                    # said, not raised


def test_what_cools_runs_both_probes_and_a_spinner_keeps_the_vcpu_from_halting(tmp_path):
    import csv
    import os
    wc = load("what_cools")
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs vCPUs 0 and 1")
    allowed = os.sched_getaffinity(0)
    assert wc.main(["--model", "tiny-mlp", "--rounds", "1", "--per-block", "12", "--executions", "45",
                    "--out", str(tmp_path)]) == 0
    assert os.sched_getaffinity(0) == allowed                                  # unpinned again
    rows = list(csv.DictReader((tmp_path / "what_cools.csv").open()))
    halt = [r for r in rows if r["probe"] == "halt"]
    neighbour = [r for r in rows if r["probe"] == "neighbour"]
    assert len(halt) == 3 * 12 and {r["condition"] for r in halt} == set(wc.HALT_CONDITIONS)
    assert len(neighbour) == 45 and all(float(r["cpu_ms"]) > 0 for r in rows)
    # never early: each execution idled at least what was drawn, a neighbour ended at least 1 ms before it
    assert all(float(r["idle_ms"]) >= float(r["drawn_idle_ms"]) - 1e-3 for r in neighbour)
    assert all(float(r["before_ms"]) >= 1e3 * wc.BEFORE_S - 1e-3 for r in neighbour if r["condition"] != "none")
    assert all(r["condition"] == "none" for r in neighbour if float(r["drawn_idle_ms"]) == 2)
    result = json.loads((tmp_path / "what_cools.json").read_text())
    assert result["model"] == "tiny-mlp" and set(result["cold_cost_saved"]) == {"halt", "neighbour"}
    if result["halts_counted"]:
        # the lowest-priority spinner runs whenever the copy sleeps: its vCPU never halts
        assert all(r["halts"] == "0" for r in halt if r["condition"] == "spinner here")


@pytest.mark.triton
def test_validate_local_says_when_its_tritonserver_died_and_keeps_the_log(tmp_path, monkeypatch, capsys):
    """The server dying during a run (killed here at the first probe, the next request refused)
    is an error that says so, with its exit code and log, kept in --out; not a traceback of the
    refused connection."""
    import os
    import signal
    vl = load("validate_local")

    def killed_then_asked(server, profile, out, client, paces=False):
        os.kill(server.server.pid, signal.SIGKILL)
        server.server.process.wait(10)
        server.serve([profile], [1])                 # the next request meets a dead server
    monkeypatch.setattr(vl, "probe", killed_then_asked)
    assert vl.main(["--workloads", "cores", "--out", str(tmp_path / "out")]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert "tritonserver exited (code -9) during the run" in said and "tritonserver.log" in said
    assert "Traceback" not in said
    assert "Started HTTPService" in (tmp_path / "out" / "tritonserver.log").read_text()


def test_the_chain_simulated_charges_each_process_its_bursts_and_what_passing_on_costs():
    """One client alone: every round trip is the relay's and the stub's work, their passing-on
    CPU included (the client's own comes before its timer); four clients that never pause on
    two cores: as many requests a second as two cores' CPU allows; and the host's placement
    lengthens the tail over processor sharing, more than the median."""
    from mmesim.profile import WakePlacement
    hc = load("host_chain")
    beyond = {"client": 0.1, "relay": 0.05, "stub": 0.02}
    alone = hc.simulate_chain(0.01, None, beyond, seconds=2, n=1, cores=2)
    assert alone["p50_ms"] == pytest.approx(0.2 + 0.05 + 1.0 + 0.02) == alone["p99_ms"]
    assert alone["stubs_waited"] == 0
    busy = hc.simulate_chain(0.0, None, beyond, seconds=2, n=4, cores=2)
    assert busy["requests_per_s"] == pytest.approx(2 / (0.15 + 0.1 + 0.2 + 0.05 + 1.0 + 0.02) * 1e3, rel=0.02)
    placed = WakePlacement(packed_share=0.3, moved_after_s=0.0015, full_share=0.9, slice_s=0.0014, late_wait_s=0.0009)
    fair, packed = (hc.simulate_chain(0.004, p, beyond, seconds=4, cores=2) for p in (None, placed))
    assert packed["p95_ms"] - fair["p95_ms"] > max(0.0, packed["p50_ms"] - fair["p50_ms"])
    assert packed == hc.simulate_chain(0.004, placed, beyond, seconds=4, cores=2)      # seeded


def test_host_chain_measures_the_chain_and_simulates_it_both_ways(tmp_path):
    hc = load("host_chain")
    assert hc.main(["--pauses-ms", "4", "--seconds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "host_chain.json").read_text())
    (run,) = result["runs"]
    assert run["pause_ms"] == 4 and run["measured"]["requests_per_s"] > 50
    assert run["measured"]["p50_ms"] >= 1.2                  # the relay's and the stub's bursts at least
    assert all(v >= 0 for v in run["cpu_beyond_ms"].values())
    for side in ("with_placement", "processor_sharing"):
        assert run[side]["p50_ms"] >= 1.2 and 0 <= run[side]["stubs_waited"] <= 1
    rows = (tmp_path / "host_chain.csv").read_text().splitlines()
    assert rows[0].startswith("pause_ms,source,requests_per_s") and len(rows) == 4
    with pytest.raises(SystemExit):                          # argparse's clear error, before any probe
        hc.main(["--pauses-ms", "x", "--out", str(tmp_path)])


def test_cores_windows_counts_every_recorded_window_as_the_readme_shows_it(tmp_path, capsys):
    """The README's table of the shared-cores case and its count are the record's data read
    back, not numbers typed in: a window added to the record without the README, or the other
    way round, fails here."""
    from pathlib import Path
    cw = load("cores_windows")
    rows = cw.runs()
    keys = [(r["window"], r["workload"], r["client"]) for r in rows]
    assert len(keys) == len(set(keys)) == 40                 # ten windows, four runs each, none twice
    assert {w for w, _, _ in keys} == set("ABDEFGHIKL")
    n, of = cw.counts(rows)["all"]
    assert of == 120 and n == sum(cw.counts(rows)[f][0] for f in cw.FIGURES)
    readme = (Path(cw.__file__).resolve().parent.parent / "README.md").read_text()
    assert cw.table(rows, markdown=True) in readme
    assert f"**{n} of {of} figures within" in readme
    # within is inclusive at the target, on the error's size whatever its sign
    edge = {"error_throughput": -0.05, "error_p50": 0.10, "error_p95": -0.1001}
    assert cw.within(edge, "throughput") and cw.within(edge, "p50") and not cw.within(edge, "p95")
    assert cw.main(["--csv", str(tmp_path / "w.csv")]) == 0
    lines = (tmp_path / "w.csv").read_text().splitlines()
    assert lines[0].startswith("window,workload,client,measured_throughput") and len(lines) == 41
    assert f"all: {n} of 120 within" in capsys.readouterr().out
