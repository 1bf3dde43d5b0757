"""`mmesim calibrate` end to end against the real tritonserver on CPU: the profile it writes
is a valid ModelProfile that loads back unchanged, with plausible figures."""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("tritonclient")

from mmesim.calibrate.latency import steady, tail_cv  # noqa: E402
from mmesim.cli import main  # noqa: E402
from mmesim.profile import ModelProfile, load_profile  # noqa: E402
from mmesim.triton.packaging import resolve  # noqa: E402
from mmesim.units import MiB  # noqa: E402

pytestmark = pytest.mark.triton



@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrate") / "tiny-mlp.json"
    argv = ["calibrate", "--model", "tiny-mlp", "--framework", "python", "--device", "cpu", "--runner", "local",
             "--batches", "1,4,16", "--concurrency", "1,2", "--repeats", "3", "--cpu-threads", "1", "--scaling", "1,2,3",
             "--max-models", "--memory-budget", "800MiB", "--out", str(out)]
    assert main(argv) == 0
    return out


def test_profile_round_trips_and_is_valid(calibrated):
    profile = load_profile(calibrated)
    assert isinstance(profile, ModelProfile)
    again = calibrated.with_name("again.json")
    profile.save(again)
    assert load_profile(again) == profile
    assert profile.framework == "python" and profile.gpu == "cpu" and profile.provenance.method == "measured"
    assert profile.provenance.triton_version
    # this host's placement of woken threads, probed before the server started, said in the notes
    placed = profile.host_wakeups
    assert 0 <= placed.packed_share <= 1 and 0 < placed.moved_after_s < 0.5
    assert 0 <= placed.full_share <= 1 and 0 < placed.slice_s < 0.5         # and with every core busy
    assert placed.source.startswith("mmesim calibrate's probe on ") and "host placement" in profile.provenance.notes
    # the command given to main(argv), not the test runner's sys.argv
    assert profile.provenance.command == f"mmesim calibrate --model tiny-mlp --framework python --device cpu " \
        f"--runner local --batches 1,4,16 --concurrency 1,2 --repeats 3 --cpu-threads 1 --scaling 1,2,3 --max-models " \
        f"--memory-budget 800MiB --out {calibrated}"


def test_profile_figures_agree_with_each_other_and_the_traces(calibrated):
    p = load_profile(calibrated)
    report = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())
    assert [t.batch for t in p.service] == [1, 4, 16] and p.triton.max_batch_size == 16
    # a batch costs no less than one request (within three standard errors of these 3 timings each:
    # tiny-mlp's batch of 16 costs little more than one, under a millisecond) and less than its
    # requests one by one (batching pays)
    one, batch = p.service[0], p.service[-1]
    error = 3 * (one.cv * one.seconds + batch.cv * batch.seconds) / 3 ** 0.5
    assert one.seconds - error < batch.seconds < 16 * one.seconds
    spec, _ = resolve("tiny-mlp")
    assert p.input_bytes == len(spec.request_body(1))          # KServe v2 JSON of one request
    # the server's fixed cost per request is kept: a fraction of a millisecond of CPU (not ordered
    # against an execution of a model this small: on an AMD EPYC both are about 0.3 ms, and which is
    # larger in one calibration depends on what else the cores ran meanwhile)
    assert 0 < p.request_overhead_s < 1e-3
    # its front end's apart from the model's threads (started with its stub), which pass each
    # execution to the stub and back inside Triton's compute time
    first = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())["requests"][0]
    assert len(first["model_cpu_s"]) == len(first["server_cpu_s"]) > 0
    assert p.model_thread_s > 0
    assert p.model_thread_s == pytest.approx(statistics.median(first["model_cpu_s"]), abs=1e-6)
    assert "the model's threads" in p.provenance.notes
    assert p.cpu_threads == 1
    # 3 copies at once on this host: measured, starting from one alone
    assert [s.concurrent for s in p.concurrency_scaling] == [1, 2, 3] and p.concurrency_scaling[0].throughput == 1
    # the two copies measured one by one cost about the same, and about what each copy added
    # while the max-models procedure loaded copy after copy (a different phase of the run)
    copies = report["per_copy_bytes"]
    assert len(copies) == 2 and abs(copies[0] - copies[1]) / max(copies) < 0.15
    trace = report["max_models"]["trace"]
    if len(trace) >= 3:
        step = (trace[-1]["used"] - trace[0]["used"]) / (len(trace) - 1)
        assert 0.6 < step / p.gpu_memory_bytes < 1.6


def test_each_batch_size_is_timed_once_warm(calibrated):
    """Warm-ups before each batch size's timed executions, as many as it takes for executions
    to stop getting faster (at least 3, at most 60 or 2 s), kept in the report and counted in
    the provenance."""
    p = load_profile(calibrated)
    report = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())
    for point in report["service"]:
        warm = point["warmup_s"]
        # batch 1 more often: its spread is also host_warmth's at short pauses
        assert 3 <= len(warm) <= 60 and len(point["compute_s"]) == (20 if point["batch"] == 1 else 3)
        assert steady(warm) or len(warm) == 60       # tiny-mlp's 60 warm-ups take well under the 2 s cap
    assert "warm-ups until five executions' median stopped falling" in p.provenance.notes


def test_how_much_longer_requests_take_on_idle_cores_is_measured(calibrated):
    """Requests paced 0, 2, 4, 6, 8, 10, 50, 250 and 1000 ms apart, at least 8 each: the profile keeps, after
    each pause, the stub's CPU relative to the service measurement's batch 1 and the hand-off."""
    p = load_profile(calibrated)
    report = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())
    points = report["warmth"]
    assert [w["gap_s"] for w in points] == [0.0, 0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.25, 1.0]
    # how busy the host was meanwhile: everything on it counts (in a parallel suite, other tests too)
    assert all(0 <= w["utilization"] <= 1 and w["compute_s"] > 0 and w["cpu_s"] > 0 and w["requests"] >= 8
               for w in points)
    assert [w.idle_s for w in p.host_warmth] == [0.0, 0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.25, 1.0]
    ref = next(t for t in report["service"] if t["batch"] == 1)
    # the stub's CPU relative to the service's batch-1 CPU, and Triton's compute beyond it: the hand-off
    ref_cpu = sum(ref["cpu_s"]) / len(ref["cpu_s"])
    assert [w.factor for w in p.host_warmth] == pytest.approx([w["stub_cpu_s"] / ref_cpu for w in points], abs=2e-3)
    assert [w.handoff_s for w in p.host_warmth] == pytest.approx(
        [max(0.0, w["compute_s"] - w["stub_cpu_s"]) for w in points], abs=2e-6)
    assert all(0 < w["stub_cpu_s"] < w["cpu_s"] for w in points)       # the server's CPU is the rest
    assert "host warmth: batch-1 requests paced" in p.provenance.notes
    # each execution's stub CPU read, and in the pauses of 10 ms and more its hand-off: their
    # spread, pooled over those pauses, the same at each; shorter ones have their own
    assert all(len(w["stub_cpu_each_s"]) == w["requests"] for w in points)
    read = [w for w in points if w["gap_s"] >= 0.01]
    assert all(len(w["handoff_each_s"]) == w["requests"] and min(w["handoff_each_s"]) >= 0 for w in read)
    assert all(not w["handoff_each_s"] for w in points if w["gap_s"] < 0.01)
    for w in points:     # read one by one, the stub's CPU needs no estimate of its idle CPU
        assert sum(w["stub_cpu_each_s"]) / w["requests"] == pytest.approx(w["stub_cpu_s"], rel=1e-9)
    cold = [w for w in p.host_warmth if w.idle_s >= 0.01]
    assert len({(w.cv, w.handoff_cv) for w in cold}) == 1
    assert cold[0].cv == tail_cv([x / (sum(w["stub_cpu_each_s"]) / len(w["stub_cpu_each_s"]))
                                  for w in read for x in w["stub_cpu_each_s"]]) > 0
    assert [w.cv for w in p.host_warmth if w.idle_s < 0.01] == \
        [tail_cv(w["stub_cpu_each_s"]) for w in points if w["gap_s"] < 0.01]
    assert "spread (cv of a gamma with the measured mean and 95th percentile)" in p.provenance.notes
    # one request at a time nothing else is queued: Triton's queue time is its thread waking
    assert [w.wakeup_s for w in p.host_warmth] == pytest.approx([w["queue_s"] for w in points], abs=1e-6)
    assert all(0 < w["queue_s"] < w["compute_s"] + 0.01 for w in points)    # + a late wake-up on a busy machine
    # the server's own CPU by thread after each pause: its front end's and the model's threads'
    assert [w.frontend_s for w in p.host_warmth] == pytest.approx([w["frontend_s"] for w in points], abs=1e-6)
    assert [w.model_thread_s for w in p.host_warmth] == pytest.approx([w["model_thread_s"] for w in points], abs=1e-6)
    assert all(w["frontend_s"] > 0 and w["model_thread_s"] > 0 for w in points)
    # the server's CPU is its front end's and its model threads' (its statistics reads left out)
    assert all(w["frontend_s"] + w["model_thread_s"] + w["stub_cpu_s"] == pytest.approx(w["cpu_s"], rel=0.05)
               for w in points)
    assert "the server's CPU per request after each pause, by thread" in p.provenance.notes


def test_a_fresh_copys_first_executions_are_timed(calibrated):
    """The first copy's first 8 batch-1 executions, before anything else ran on it: the first
    takes longer than the steady batch 1 (the stub initialises lazily), and the profile keeps
    what each took beyond it, up to the last one 20 % longer."""
    p = load_profile(calibrated)
    report = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())
    first = report["first_executions_s"]
    ref = next(t for t in report["service"] if t["batch"] == 1)
    steady = sum(ref["compute_s"]) / len(ref["compute_s"])
    assert len(first) == 8 and first[0] > 1.2 * steady
    assert p.first_executions_s and p.first_executions_s[0] == pytest.approx(first[0] - steady, abs=1e-5)
    assert len(p.first_executions_s) <= 8 and "first executions of a fresh copy" in p.provenance.notes


def test_working_memory_leak_and_the_models_own_unload(calibrated):
    """Three load/unload cycles of fresh copies: each execution's peak above the loaded copy
    by batch size, no memory left behind by a Python-backend stub that exits with its model,
    and the unload as Triton's log times it, shorter than the DELETE the server answers at
    its next 500 ms poll."""
    p = load_profile(calibrated)
    work = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())["work"]
    assert [w.batch for w in p.working_memory] == [1, 4, 16]
    sizes = [w.bytes for w in p.working_memory]
    assert sizes == sorted(sizes) and 0 < sizes[0] < 200 * MiB
    assert p.leak_bytes_per_unload < 5 * MiB
    assert len(work["cycles"]["unload_s"]) == 3
    assert p.unload_s == pytest.approx(sum(work["cycles"]["unload_s"]) / 3)
    assert all(own < http for own, http in zip(work["cycles"]["unload_s"], work["cycles"]["http_unload_s"]))
    assert "VmHWM" in p.memory_source and "Triton's log" in p.memory_source


def test_max_models_stops_where_the_rule_says_and_the_simulator_agrees(calibrated):
    from mmesim.endpoint import EndpointConfig
    from mmesim.sim import max_models_loaded

    report = json.loads(calibrated.with_name("tiny-mlp.calibration.json").read_text())
    assert report["process_overhead_bytes"] > 0
    mm = report["max_models"]
    assert mm["stopped_by"] == "threshold" and mm["trace"][-1]["models"] == mm["count"] >= 2
    rule = [(s["used"] + s["used"] / s["models"]) / s["total"] >= 0.9 for s in mm["trace"]]
    assert rule[-1] and not any(rule[:-1])                   # the first step that crossed it, not later
    predicted, _ = max_models_loaded([load_profile(calibrated)],
                                     EndpointConfig(instance_type="local", memory_budget_bytes=800 * MiB))
    assert abs(predicted[0] - mm["count"]) <= 1
    assert {(p["batch"], p["concurrency"]) for p in report["load_points"]} >= {(1, 1), (16, 2)}


def test_simulate_accepts_it(calibrated, tmp_path, capsys):
    wl = tmp_path / "light.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 30, rate: 20}]\n")
    assert main(["simulate", "--profile", str(calibrated), "--instance", "ml.g4dn.2xlarge", "--copies", "2",
                 "--workload", str(wl), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["requests"] > 400 and s["failures"] == 0
    assert any("CPU figures" in w for w in s["warnings"])     # a CPU profile on a GPU instance says what it is


def test_a_server_that_dies_at_the_final_unload_costs_nothing_measured(tmp_path):
    """Every figure is taken before the copies are unloaded at the end; a tritonserver that
    dies there (2.51 once did, with signal 11, unloading 11 copies at once) is noted in the
    trace and the profile is kept. Here the real server is killed as the final unload starts."""
    import psutil

    from mmesim.calibrate.run import CalibrateOptions, calibrate

    killed = []
    servers = (lambda: [c for c in psutil.Process().children(recursive=True) if c.name() == "tritonserver"])
    others = {c.pid for c in servers()}         # this worker's shared server (conftest) lives on

    def progress(msg: str) -> None:
        if msg.startswith("total throughput of"):        # copies at once: the last measurement
            killed.append(False)
        elif killed == [False] and msg.startswith("unloading"):
            for child in servers():
                if child.pid not in others:
                    child.kill()
                    child.wait(30)
                    killed[0] = True

    opts = CalibrateOptions(model="tiny-mlp", batches=[1, 4], concurrency=[1], repeats=2, scaling=[1, 2], cycles=1,
                            warmth_s=0.0, placement_s=0.0, cpu_threads=1, measure_overhead=False, request_requests=2,
                            load_requests=4, workdir=str(tmp_path))
    cal = calibrate(opts, progress)
    assert killed == [True]
    assert cal.memory_trace[-1]["event"] == "final unload failed"
    assert [t.batch for t in cal.profile.service] == [1, 4] and cal.profile.service[0].seconds > 0
    assert cal.profile.unload_s == pytest.approx(cal.work.cycles.unload_s[0])    # from the cycle, measured before
    assert cal.profile.provenance.triton_version == "2.51.0"       # read before the unload
