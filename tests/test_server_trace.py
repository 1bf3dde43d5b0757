"""Inside the server: Triton's per-request trace read back, the simulator's own queue and
execution times, and validate putting the two side by side."""

import json

import numpy as np
import pytest

from conftest import make_profile
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.process import tree_run_delay_s
from mmesim.sim import Simulation
from mmesim.triton import trace
from mmesim.workload import Workload

MS = 1_000_000      # ns


def triton_entries(rid, model, recv, compute, end, send):
    """One request as Triton 2.51 writes it: several entries per id, in no fixed order."""
    stamp = (lambda name, ns: {"id": rid, "timestamps": [{"name": name, "ns": ns}]})
    return [stamp("HTTP_RECV_START", recv), stamp("HTTP_RECV_END", recv + 1000), {"id": rid, "model_name": model},
            stamp("REQUEST_START", recv + 2000), stamp("QUEUE_START", recv + 3000), stamp("COMPUTE_START", compute),
            stamp("COMPUTE_INPUT_END", compute + 1000), stamp("COMPUTE_OUTPUT_START", end - 1000),
            stamp("COMPUTE_END", end), stamp("REQUEST_END", end + 1000), stamp("HTTP_SEND_START", send - 1000),
            stamp("HTTP_SEND_END", send)]


@pytest.fixture
def traced(tmp_path):
    """Three requests: a and b overlap for half of each one's execution, c runs alone; b
    waits 2 ms in its queue. Triton wrote the first two to trace.json.0 and the last at exit."""
    t0 = 10_000 * MS
    a = triton_entries(1, "m-v0", t0, t0 + 3000, t0 + 3000 + 10 * MS, t0 + 11 * MS)
    b = triton_entries(2, "m-v1", t0 + 3 * MS, t0 + 3 * MS + 3000 + 2 * MS, t0 + 3 * MS + 3000 + 12 * MS, t0 + 16 * MS)
    c = triton_entries(3, "m-v0", t0 + 40 * MS, t0 + 40 * MS + 3000, t0 + 50 * MS + 3000, t0 + 51 * MS)
    path = tmp_path / "trace.json"
    (tmp_path / "trace.json.0").write_text(json.dumps(b[::-1] + a))
    path.write_text(json.dumps(c))
    return path, t0


def test_a_trace_splits_each_request_into_the_parts_the_simulator_models(traced):
    path, t0 = traced
    t = trace.read(path)
    assert t["model"] == ["m-v0", "m-v1", "m-v0"]                    # by arrival, across both files
    assert t["queue"] == pytest.approx([0, 2, 0])                   # ms: b waited 2 ms for its execution
    assert t["compute"] == pytest.approx([10, 10, 10])
    assert t["server"] == pytest.approx([11, 13, 11])
    assert t["pre"] == pytest.approx([0.003] * 3) and t["post"] == pytest.approx([1 - 0.003, 1 - 0.003, 1 - 0.003])
    # b's execution starts 5 ms into a's: each runs half of its 10 ms beside the other; c alone
    assert t["overlap"] == pytest.approx([0.5, 0.5, 0.0])
    parts = trace.breakdown(t)
    assert parts["compute_alone"]["n"] == 1 and parts["compute_shared"]["n"] == 2
    assert parts["queue"]["p50"] == pytest.approx(0)
    # the clock is CLOCK_MONOTONIC: a load test's window keeps only its own requests
    assert trace.read(path, (t0 + 30 * MS, t0 + 60 * MS))["model"] == ["m-v0"]


def test_numbered_parts_are_read_in_their_order(tmp_path):
    for i in (10, 2, 0):
        (tmp_path / f"t.json.{i}").write_text("[]")
    (tmp_path / "t.json.bak").write_text("not a part")
    assert [p.name for p in trace.trace_files(tmp_path / "t.json")] == ["t.json.0", "t.json.2", "t.json.10"]


def test_overlap_counts_the_union_of_the_others():
    # x is covered by y (0-4) and z (2-6) together: 6 of its 10 ms, not 4 + 4
    share = trace.overlap(np.array([0, 0, 2, 20]), np.array([10, 4, 6, 25]))
    assert share == pytest.approx([0.6, 1.0, 1.0, 0.0])
    # touching is not overlapping, an empty interval overlaps nothing, twins cover each other
    share = trace.overlap(np.array([0, 1, 5, 7, 7]), np.array([1, 2, 5, 9, 9]))
    assert share == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.0])


def test_overlap_agrees_with_a_direct_count_on_many_intervals():
    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 100, 300)
    ends = starts + rng.exponential(2, 300)
    share = trace.overlap(starts, ends)
    for i in range(0, 300, 17):               # midpoints of a fine grid over interval i
        grid = starts[i] + (np.arange(4000) + 0.5) * (ends[i] - starts[i]) / 4000
        others = (starts[None, :] <= grid[:, None]) & (ends[None, :] > grid[:, None])
        others[:, i] = False
        assert share[i] == pytest.approx(others.any(axis=1).mean(), abs=1e-3)


def test_a_missing_or_broken_trace_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"no trace there.*--trace-config triton,file="):
        trace.read(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1, ')
    with pytest.raises(ConfigError, match=r"bad\.json.*not a Triton trace"):
        trace.read(bad)
    bad.write_text('{"id": 1}')
    with pytest.raises(ConfigError, match="JSON array"):
        trace.read(bad)


def test_the_simulator_keeps_each_requests_queue_and_execution(tmp_path):
    """One copy, one execution at a time, 100 ms each, no batching: of two requests at once
    the second waits the first's 100 ms in the queue; both execute 100 ms."""
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n0,m-v0\n0,m-v0\n1,m-v0\n")
    profile = make_profile(name="m", s1=0.1, max_batch=1, decode=0.0)
    run = Simulation([profile], EndpointConfig(instance_type="ml.g4dn.xlarge"), Workload(kind="trace", trace=str(path)),
                     [1], server_timing=True).run(5)
    assert sorted(run.server_ms["queue"]) == pytest.approx([0, 0, 100])
    assert run.server_ms["compute"] == pytest.approx([100, 100, 100])
    # inside the server: arrival at the instance to the answer (no decoding here), so the
    # request that queued spent 200 ms there
    assert sorted(run.server_ms["server"]) == pytest.approx([100, 100, 200])
    assert Simulation([profile], EndpointConfig(instance_type="ml.g4dn.xlarge"),
                      Workload(kind="trace", trace=str(path)), [1]).run(5).server_ms is None   # off by default


def test_validate_shows_the_servers_parts_measured_and_predicted(tmp_path, traced):
    from test_validate import PROFILE, _write_measured

    from mmesim.loadtest.validate import validate
    from mmesim.profile import load_profile
    from mmesim.sim import simulate
    path, _ = traced
    wl = Workload(stages=[{"end_s": 10, "users": 2, "spawn_rate": 2}], wait_s=(0.05, 0.2))
    profile = load_profile(PROFILE)
    pred = simulate([profile], EndpointConfig(instance_type="local"), wl, copies=[2])
    _write_measured(tmp_path / "measured", pred, stretch=1.0)
    v = validate([profile], EndpointConfig(instance_type="local"), wl, [2], measured=tmp_path / "measured",
                 server_trace=path)
    lines = {x.figure: x for x in v.comparison.lines}
    assert lines["compute p50"].measured == pytest.approx(10) and lines["compute p50"].source == "triton trace"
    assert lines["queue p95"].measured == pytest.approx(np.percentile([0, 2, 0], 95))
    assert lines["server p50"].measured == pytest.approx(11) and lines["server p95"].source == "triton trace"
    # inside the server the prediction holds decoding, queue and execution: at least the execution
    assert lines["server p50"].predicted >= lines["compute p50"].predicted > 0
    # the prediction's own: tiny-mlp's calibrated execution, a fraction of a millisecond
    assert 0 < lines["compute p50"].predicted < 5 and lines["compute p50"].ok is None     # shown, not judged
    assert v.predicted_summary.sources["server"] == "simulator"
    # a and b overlapped, c ran alone: the same split on both sides
    assert lines["overlapped share"].measured == pytest.approx(2 / 3) and lines["compute alone p50"].measured == 10
    assert lines["overlapped share"].predicted is not None and lines["compute alone p50"].predicted > 0
    with pytest.raises(ConfigError, match="no trace there"):        # before anything is simulated
        validate([profile], EndpointConfig(instance_type="local"), wl, [2], measured=tmp_path / "measured",
                 server_trace=tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no such folder.*MMESIM_EXEC_LOG"):
        validate([profile], EndpointConfig(instance_type="local"), wl, [2], measured=tmp_path / "measured",
                 exec_log=tmp_path / "missing")
    logs = tmp_path / "executions"
    logs.mkdir()
    (logs / "tiny-mlp-v0.7.log").write_text(f"0 {MS} {MS} 900000 1 1 0 0\n"
                                            f"{MS // 2} {2 * MS} {2 * MS} 800000 1 1 {MS // 2} 1\n")
    v = validate([profile], EndpointConfig(instance_type="local"), wl, [2], measured=tmp_path / "measured",
                 exec_log=logs, out=tmp_path / "v")
    assert v.executions["overlapped"]["n"] == 2 and v.executions["overlapped"]["waited"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "v" / "measurement" / "executions.json").read_text()) == v.executions


def test_run_queue_waits_of_a_process_tree_are_read():
    import os
    import threading
    from mmesim.process import thread_times
    before = thread_times(os.getpid())
    done, release = threading.Barrier(4), threading.Event()

    def work():
        sum(i * i for i in range(1_000_000))
        done.wait()
        release.wait()                      # alive while read: an exited thread's counters are gone
    busy = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in busy]
    done.wait()
    ran, waited = thread_times(os.getpid())
    tree = tree_run_delay_s(os.getpid())
    release.set()
    [t.join() for t in busy]
    assert ran > before[0] and waited >= 0
    assert tree >= waited                                           # the tree includes the process itself
    assert tree_run_delay_s(2 ** 22 + 7) is None                    # no such process


def test_the_stubs_execution_log_reads_back_cpu_and_waits(tmp_path):
    """Two copies' logs: copy 0 ran 0-2 ms (its model's call returned at 1.5 ms) and 10-11 ms
    (two requests of 3 and 1 items), copy 1 1-4 ms (it waited 1.5 ms for a core, one more time
    on a core); a kernel without counters writes -1."""
    from mmesim.triton import execlog
    (tmp_path / "m-v0.100.log").write_text(f"0 {MS * 3 // 2} {2 * MS} {1_900_000} 1 1 0 0\n"
                                           f"{10 * MS} {11 * MS} {11 * MS} 950000 2 4 -1 -1\n")
    (tmp_path / "m-v1.200.log").write_text(f"{MS} {4 * MS} {4 * MS} {1_400_000} 1 1 {1_500_000} 1\n\n")
    log = execlog.read(tmp_path)
    assert log["model"] == ["m-v0", "m-v1", "m-v0"]                       # by start, across files
    assert log["wall"] == pytest.approx([2, 3, 1]) and log["cpu"] == pytest.approx([1.9, 1.4, 0.95])
    assert log["call"] == pytest.approx([1.5, 3, 1]) and log["after"] == pytest.approx([0.5, 0, 0])
    assert log["wait"][:2] == pytest.approx([0, 1.5]) and np.isnan(log["wait"][2])
    assert list(log["requests"]) == [1, 1, 2] and list(log["items"]) == [1, 1, 4]
    assert log["overlap"] == pytest.approx([0.5, 1 / 3, 0])
    # by batch, of the executions that ran alone: the third only
    assert execlog.by_items(log) == {4: {"n": 1, "wall_ms": 1.0, "call_ms": 1.0, "after_ms": 0.0, "cpu_ms": 0.95}}
    parts = execlog.breakdown(log)
    assert parts["alone"]["n"] == 1 and parts["overlapped"]["n"] == 2
    assert parts["overlapped"]["waited"] == pytest.approx(0.5)           # m-v1 waited more than 0.2 ms
    assert parts["alone"]["wait"]["n"] == 0 and parts["alone"]["waited"] is None
    assert "overlapped" in execlog.describe(parts)
    assert execlog.read(tmp_path, (5 * MS, 20 * MS))["model"] == ["m-v0"]


def test_a_missing_or_broken_execution_log_is_named(tmp_path):
    from mmesim.triton import execlog
    with pytest.raises(ConfigError, match="no execution log there.*MMESIM_EXEC_LOG"):
        execlog.read(tmp_path)
    (tmp_path / "m-v0.1.log").write_text("1 2 2 3 1 1 0 0\n1 2 three\n")
    with pytest.raises(ConfigError, match=r"m-v0\.1\.log.*line 2 is not an execution"):
        execlog.read(tmp_path)


def test_executions_alone_and_overlapped_are_summarised_alike_for_both_sides():
    """One function for predictions and measurements: with each execution's start, its time
    apart for executions that ran alone and those that overlapped another."""
    from mmesim.results.summary import server_figures
    figures = server_figures({"queue": [0, 0, 0], "compute": [10, 10, 4], "start": [0, 5, 40]})
    assert figures["compute_alone_p50_ms"] == pytest.approx(4) and figures["compute_overlapped_p95_ms"] == pytest.approx(10)
    assert figures["overlapped_share"] == pytest.approx(2 / 3)
    assert "overlapped_share" not in server_figures({"queue": [0], "compute": [1]})
