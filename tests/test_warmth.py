"""Cold models: on a CPU host an execution takes longer when the model has not executed for a
while (profile.host_warmth, measured by calibrate pacing requests), and only there."""

import random
import statistics

import pytest

from conftest import make_profile
from mmesim.calibrate.latency import ServicePoint, WarmthPoint, tail_cv, warmth_curve
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.serde import validate
from mmesim.sim import Simulation
from mmesim.workload import Workload

CURVE = [{"idle_s": 0.25, "factor": 2.5}, {"idle_s": 0.0, "factor": 0.9}, {"idle_s": 0.01, "factor": 1.0}]


@pytest.fixture
def two_cores(monkeypatch):
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: 2)


def test_the_factor_is_linear_between_measured_points_and_flat_beyond():
    p = make_profile(gpu="cpu", host_warmth=CURVE)
    assert [w.idle_s for w in p.host_warmth] == [0.0, 0.01, 0.25]                # sorted on the way in
    assert p.warmth_factor(0.0) == 0.9 and p.warmth_factor(3.0) == 2.5
    assert p.warmth_factor(0.005) == pytest.approx(0.95)
    assert p.warmth_factor(0.13) == pytest.approx(1.75)
    assert make_profile(gpu="cpu").warmth_factor(1.0) == 1.0                      # none measured: as calibrated


def test_a_bad_curve_is_refused_by_name():
    data = make_profile(gpu="cpu").to_dict()
    with pytest.raises(ConfigError, match="p.json.*host_warmth.*repeat"):
        validate(ModelProfile, {**data, "host_warmth": [{"idle_s": 0.1, "factor": 2}] * 2}, source="p.json")
    with pytest.raises(ConfigError, match="host_warmth.*idle_s"):
        validate(ModelProfile, {**data, "host_warmth": [{"idle_s": -1, "factor": 2}]}, source="p.json")


def _reference(wall_s: float, cpu_s: float | None = None, n: int = 20) -> ServicePoint:
    """The service measurement's batch 1: ``n`` executions of ``wall_s`` (and ``cpu_s`` of the stub's CPU)."""
    return ServicePoint(1, 100, compute_s=[wall_s] * n, cpu_s=[cpu_s] * n if cpu_s else [])


def _wh(curve):
    return [(w.idle_s, w.factor, w.handoff_s) for w in curve]


def test_calibrations_points_become_the_curve_relative_to_the_service_figure():
    points = [WarmthPoint(0.25, 8, 0.0025, 0.003, 0.01), WarmthPoint(0.0, 500, 0.0009, 0.0011, 0.5),
              WarmthPoint(0.01, 100, 0.001, 0.0012, 0.07)]
    # by gap, relative to the service measurement's 1 ms
    assert _wh(warmth_curve(points, _reference(0.001))) == [(0.0, 0.9, None), (0.01, 1.0, None), (0.25, 2.5, None)]
    assert warmth_curve(points, None) == [] and warmth_curve(points, _reference(0.0)) == []


def test_with_the_stubs_cpu_the_curve_holds_its_cpu_and_the_hand_off_apart():
    """The stub's CPU relative to the service measurement's batch-1 CPU, and what Triton's
    compute wall has beyond it: the hand-off, which grows as the threads sleep longer."""
    points = [WarmthPoint(0.25, 8, 0.0031, 0.004, 0.01, stub_cpu_s=0.0024),
              WarmthPoint(0.0, 500, 0.0012, 0.0014, 0.5, stub_cpu_s=0.00096)]
    curve = warmth_curve(points, _reference(0.0011, 0.0008))
    assert _wh(curve) == [(0.0, 1.2, 0.00024), (0.25, 3.0, 0.0007)]
    assert [w.cv for w in curve] == [None, None]            # no execution read alone: the service cv
    # a point without the stub's CPU: the whole curve as before, on Triton's wall
    points.append(WarmthPoint(0.01, 100, 0.0011, 0.0012, 0.07))
    assert [w.handoff_s for w in warmth_curve(points, _reference(0.0011, 0.0008))] == [None] * 3


def test_tail_cv_is_the_gamma_with_the_samples_mean_and_95th_percentile():
    rng = random.Random(3)
    for cv in (0.05, 0.12, 0.3, 0.6):
        k = 1 / cv ** 2
        assert tail_cv([rng.gammavariate(k, 1 / k) for _ in range(20000)]) == pytest.approx(cv, rel=0.06)
    # a few far outliers move a standard deviation, not the 95th percentile
    samples = [1.0 + 0.01 * (i % 20) for i in range(400)] + [30.0] * 2
    assert statistics.pstdev(samples) / statistics.fmean(samples) > 1.5 and tail_cv(samples) < 0.1
    assert tail_cv([1.0]) == 0.0 and tail_cv([1.0] * 10) == 0.0 and tail_cv([0.0, 0.0]) == 0.0


def test_executions_read_one_by_one_give_the_spread_after_an_idle_spell():
    """Pauses where each execution's hand-off was read share one spread, each pause's relative
    to its own mean (a long pause's 8 executions pooled with a short one's many); a shorter
    pause has its own stub CPU spread and the service measurement's hand-off spread."""
    rng = random.Random(5)
    cold = lambda mean, cv, n: [rng.gammavariate(1 / cv ** 2, mean * cv ** 2) for _ in range(n)]
    long_cpu, short_cpu = cold(0.003, 0.15, 300), cold(0.002, 0.15, 900)
    long_h, short_h = cold(0.0008, 0.4, 300), cold(0.0005, 0.4, 900)
    warm_cpu = cold(0.001, 0.05, 500)
    points = [WarmthPoint(0.0, 500, 0.0012, 0.0014, 0.5, stub_cpu_s=0.001, stub_cpu_each_s=warm_cpu),
              WarmthPoint(0.01, 900, 0.0025, 0.003, 0.1, stub_cpu_s=0.002, stub_cpu_each_s=short_cpu,
                          handoff_each_s=short_h),
              WarmthPoint(1.0, 300, 0.0038, 0.004, 0.01, stub_cpu_s=0.003, stub_cpu_each_s=long_cpu,
                          handoff_each_s=long_h)]
    reference = ServicePoint(1, 100, compute_s=[0.0012 + 0.0001 * (i % 2) for i in range(20)],
                             cpu_s=[0.001] * 20)
    curve = warmth_curve(points, reference)
    assert curve[1].cv == curve[2].cv == pytest.approx(0.15, rel=0.12)
    assert curve[1].handoff_cv == curve[2].handoff_cv == pytest.approx(0.4, rel=0.12)
    assert curve[0].cv == pytest.approx(0.05, rel=0.15) and curve[0].handoff_cv == tail_cv([0.0002, 0.0003] * 10) > 0
    p = make_profile(gpu="cpu", host_warmth=[w.model_dump() for w in curve])
    assert p.spread_by_idle and p.warmth_spread(0.5, 0.9) == (curve[2].cv, curve[2].handoff_cv)
    # between two measured pauses, one of their spreads: a quarter of the way, the later one's a quarter of the time
    assert p.warmth_spread(0.0025, 0.2) == (curve[1].cv, curve[1].handoff_cv)
    assert p.warmth_spread(0.0025, 0.3) == (curve[0].cv, curve[0].handoff_cv)
    assert p.warmth_spread(0.0, 0.99) == (curve[0].cv, curve[0].handoff_cv)


SPLIT = [{"idle_s": 0.0, "factor": 1.0, "handoff_s": 0.001}, {"idle_s": 1.0, "factor": 2.0, "handoff_s": 0.05}]


def test_the_hand_off_by_idle_is_linear_between_points_and_all_or_none():
    p = make_profile(gpu="cpu", host_warmth=SPLIT, handoff_s=0.002)
    assert p.handoff_by_idle and p.warmth_handoff(0.5) == pytest.approx(0.0255) and p.warmth_handoff(9) == 0.05
    old = make_profile(gpu="cpu", host_warmth=CURVE, handoff_s=0.002)
    assert not old.handoff_by_idle and old.warmth_handoff(0.5) == 0.002     # the profile's, at any pace
    data = make_profile(gpu="cpu").to_dict()
    with pytest.raises(ConfigError, match="p.json.*host_warmth.*at every point or none"):
        validate(ModelProfile, {**data, "host_warmth": [SPLIT[0], {"idle_s": 1.0, "factor": 2.0}]}, source="p.json")
    with pytest.raises(ConfigError, match="host_warmth.*handoff_s"):
        validate(ModelProfile, {**data, "host_warmth": [{**SPLIT[0], "handoff_s": -1}]}, source="p.json")


def _trace(tmp_path, times):
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n" + "".join(f"{t},m-v0\n" for t in times))
    return Workload(kind="trace", trace=str(path))


def _apart_and_busy(tmp_path, host_warmth, **kw) -> tuple[list[float], list[float]]:
    """Latencies of a 100 ms model on local: three requests seconds apart, then one user
    sending back to back for 5 s."""
    profile = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                           host_warmth=host_warmth, **kw)
    local = EndpointConfig(instance_type="local")
    apart = Simulation([profile], local, _trace(tmp_path, [1, 4, 7]), [1]).run(10)
    busy = Simulation([profile], local, Workload(stages=[{"end_s": 5, "users": 1, "spawn_rate": 1}], wait_s=(0, 0)),
                      [1]).run(5)
    return [r.end - r.start for r in apart.records], [r.end - r.start for r in busy.records]


def test_after_an_idle_spell_both_the_cpu_and_the_hand_off_grow(tmp_path, two_cores):
    """100 ms of CPU: after seconds idle the stub's CPU doubles and the hand-off is 50 ms;
    one after another, 100 ms and 1 ms."""
    apart, busy = _apart_and_busy(tmp_path, SPLIT, handoff_s=0.001)
    assert apart == pytest.approx([0.25] * 3, rel=1e-5)
    assert len(busy) > 40 and all(x == pytest.approx(0.101, rel=1e-4) for x in busy)


def test_a_model_that_idled_runs_cold_and_one_kept_busy_warm(tmp_path, two_cores):
    """100 ms executions: every 3 s, the model has idled for seconds (x2.5); one after another,
    it has not idled at all (x0.9)."""
    apart, busy = _apart_and_busy(tmp_path, CURVE)
    assert apart == pytest.approx([0.25] * 3, rel=1e-5)
    assert len(busy) > 40 and all(x == pytest.approx(0.09, rel=1e-5) for x in busy)
    # a GPU instance: the host's warmth is not the device's (the same figures as calibrated)
    def on_gpu(**kw):
        run = Simulation([make_profile(name="m", s1=0.1, max_batch=1, **kw)], EndpointConfig(instance_type="ml.g4dn.xlarge"),
                         _trace(tmp_path, [1, 4]), [1]).run(6)
        return [r.end - r.start for r in run.records]
    assert on_gpu(host_warmth=CURVE) == on_gpu()


SPREAD = [{**SPLIT[0], "cv": 0.0, "handoff_cv": 0.0}, {**SPLIT[1], "cv": 0.2, "handoff_cv": 0.5}]


def test_a_cold_execution_is_drawn_with_the_spread_measured_after_that_idle(tmp_path, two_cores):
    """After seconds idle the stub's CPU (200 ms on average) and the hand-off (50 ms) each vary
    as measured: the latencies' mean stays, their spread is the two parts' together; back to
    back, where the spread measured is none, every execution takes its 101 ms."""
    profile = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                           host_warmth=SPREAD, handoff_s=0.001)
    local = EndpointConfig(instance_type="local")
    apart = Simulation([profile], local, _trace(tmp_path, [2 * i for i in range(1, 400)]), [1]).run(810)
    lat = [r.end - r.start for r in apart.records]
    assert len(lat) == 399 and statistics.fmean(lat) == pytest.approx(0.25, rel=0.03)
    assert statistics.pstdev(lat) == pytest.approx(((0.2 * 0.2) ** 2 + (0.05 * 0.5) ** 2) ** 0.5, rel=0.15)
    busy = Simulation([profile], local, Workload(stages=[{"end_s": 5, "users": 1, "spawn_rate": 1}], wait_s=(0, 0)),
                      [1]).run(5)
    assert len(busy.records) > 40 and all(r.end - r.start == pytest.approx(0.101, rel=1e-4) for r in busy.records)
    # without a measured spread, the same cold executions all take their mean
    flat = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                        host_warmth=SPLIT, handoff_s=0.001)
    again = Simulation([flat], local, _trace(tmp_path, [2 * i for i in range(1, 20)]), [1]).run(50)
    assert all(r.end - r.start == pytest.approx(0.25, rel=1e-5) for r in again.records)


def test_a_spread_at_some_points_only_is_refused_by_name():
    data = make_profile(gpu="cpu").to_dict()
    for attr in ("cv", "handoff_cv"):
        with pytest.raises(ConfigError, match=f"p.json.*host_warmth.*{attr} is given at some idle_s"):
            validate(ModelProfile, {**data, "host_warmth": [SPREAD[0], {**SPREAD[1], attr: None}]}, source="p.json")
    with pytest.raises(ConfigError, match="host_warmth.*cv"):
        validate(ModelProfile, {**data, "host_warmth": [{**SPREAD[0], "cv": -0.1}]}, source="p.json")


def test_a_request_to_a_model_that_idled_waits_for_its_thread_to_wake(tmp_path, two_cores):
    """After seconds idle Triton's instance thread takes 20 ms to pick the request up: it
    waits that long in the queue (as Triton's trace counts it), then executes as before; a
    request already waiting when the last execution ended finds the thread awake."""
    woken = [{**SPLIT[0], "wakeup_s": 0.001}, {**SPLIT[1], "wakeup_s": 0.02}]
    profile = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                           host_warmth=woken, handoff_s=0.001)
    assert profile.wakeup_by_idle and profile.warmth_wakeup(0.5) == pytest.approx(0.0105)
    local = EndpointConfig(instance_type="local")
    run = Simulation([profile], local, _trace(tmp_path, [1, 4, 7]), [1], server_timing=True).run(10)
    assert [r.end - r.start for r in run.records] == pytest.approx([0.27] * 3, rel=1e-5)
    assert list(run.server_ms["queue"]) == pytest.approx([20.0] * 3, rel=1e-5)
    assert list(run.server_ms["compute"]) == pytest.approx([250.0] * 3, rel=1e-5)
    # two requests at once: the second waited for the first, whose end found it there
    both = Simulation([profile], local, _trace(tmp_path, [1, 1]), [1], server_timing=True).run(5)
    assert sorted(both.server_ms["queue"]) == pytest.approx([20.0, 270.0], rel=1e-5)
    assert sorted(r.end - r.start for r in both.records) == pytest.approx([0.27, 0.371], rel=1e-5)


def test_spreads_between_measured_pauses_keep_the_simulator_to_a_few_blocks(tmp_path, two_cores):
    """Idle times of every length draw from the measured pauses' spreads only (one block of
    variates each): a spread per idle time once took 23 GB for a default simulation."""
    profile = make_profile(name="m", gpu="cpu", s1=0.001, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                           host_warmth=[{**SPREAD[0], "cv": 0.05}, {**SPREAD[1], "idle_s": 0.01}], handoff_s=0.001)
    sim = Simulation([profile], EndpointConfig(instance_type="local"),
                     Workload(stages=[{"end_s": 20, "users": 3, "spawn_rate": 3}], wait_s=(0, 0.02)), [1])
    run = sim.run(20)
    assert len(run.records) > 1000 and len(sim.noise._gammas) <= 4
