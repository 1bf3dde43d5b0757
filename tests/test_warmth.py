"""Cold models: on a CPU host an execution takes longer when the model has not executed for a
while (profile.host_warmth, measured by calibrate pacing requests), and only there."""

import pytest

from conftest import make_profile
from mmesim.calibrate.latency import WarmthPoint, warmth_curve
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


def test_calibrations_points_become_the_curve_relative_to_the_service_figure():
    points = [WarmthPoint(0.25, 8, 0.0025, 0.003, 0.01), WarmthPoint(0.0, 500, 0.0009, 0.0011, 0.5),
              WarmthPoint(0.01, 100, 0.001, 0.0012, 0.07)]
    # by gap, relative to the service measurement's 1 ms
    assert warmth_curve(points, 0.001) == [(0.0, 0.9, None), (0.01, 1.0, None), (0.25, 2.5, None)]
    assert warmth_curve(points, 0.0) == []


def test_with_the_stubs_cpu_the_curve_holds_its_cpu_and_the_hand_off_apart():
    """The stub's CPU relative to the service measurement's batch-1 CPU, and what Triton's
    compute wall has beyond it: the hand-off, which grows as the threads sleep longer."""
    points = [WarmthPoint(0.25, 8, 0.0031, 0.004, 0.01, stub_cpu_s=0.0024),
              WarmthPoint(0.0, 500, 0.0012, 0.0014, 0.5, stub_cpu_s=0.00096)]
    assert warmth_curve(points, 0.0011, 0.0008) == [(0.0, 1.2, 0.00024), (0.25, 3.0, 0.0007)]
    # a point without the stub's CPU: the whole curve as before, on Triton's wall
    points.append(WarmthPoint(0.01, 100, 0.0011, 0.0012, 0.07))
    assert [h for _, _, h in warmth_curve(points, 0.0011, 0.0008)] == [None] * 3


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
