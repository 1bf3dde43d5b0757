"""tritonserver's own CPU cools between requests as the model does: its front end (HTTP,
parsing, the answer) by how long the server has had nothing to do, its threads for the model
by how long the model has not executed. calibrate measures both after each pause
(``Warmth.frontend_s``, ``Warmth.model_thread_s``); on shared cores the simulator (and the
emulator's virtual backend, on the same Host) takes a request's handling and the model
threads' work from them."""

import pytest

from conftest import make_profile
from mmesim.calibrate.latency import ServicePoint, WarmthPoint, warmth_curve
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.serde import validate
from mmesim.sim import Simulation
from mmesim.workload import Workload

# a 100 ms model whose request costs 10 ms: 5 ms of front end back to back, 30 ms after a second idle
CURVE = [{"idle_s": 0.0, "factor": 1.0, "frontend_s": 0.005, "model_thread_s": 0.02},
         {"idle_s": 1.0, "factor": 1.0, "frontend_s": 0.03, "model_thread_s": 0.08}]


def _cores(monkeypatch, n):
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: n)


def _profile(**kw) -> ModelProfile:
    return make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                        request_overhead_s=0.01, model_thread_s=0.04, **kw)


def _latencies(tmp_path, times, copies=1, instance="local", **kw) -> list[float]:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n" + "".join(f"{t},m-v{i % copies}\n" for i, t in enumerate(times)))
    run = Simulation([_profile(**kw)], EndpointConfig(instance_type=instance), Workload(kind="trace", trace=str(path)),
                     [copies]).run(max(times) + 3)
    return [r.end - r.start for r in sorted(run.records, key=lambda r: r.start)]


def test_the_front_ends_factor_is_relative_to_the_request_cost_and_all_or_none():
    p = _profile(host_warmth=CURVE)
    assert p.frontend_by_idle and p.frontend_ref_s == pytest.approx(0.01)
    assert p.frontend_factor(0.0) == pytest.approx(0.5) and p.frontend_factor(5.0) == pytest.approx(3.0)
    assert p.frontend_factor(0.5) == pytest.approx(1.75)                           # linear between
    assert p.warmth_model_thread(0.5) == pytest.approx(0.05) and p.warmth_model_thread(9) == pytest.approx(0.08)
    plain = _profile(host_warmth=[{k: v for k, v in w.items() if k in ("idle_s", "factor")} for w in CURVE])
    assert plain.frontend_factor(1.0) == 1.0 and plain.warmth_model_thread(1.0) == 0.04    # as calibrated
    data = _profile().to_dict()
    for attr in ("frontend_s", "model_thread_s"):
        with pytest.raises(ConfigError, match=f"p.json.*host_warmth.*{attr}.*every point or none"):
            validate(ModelProfile, {**data, "host_warmth": [CURVE[0], {k: v for k, v in CURVE[1].items() if k != attr}]},
                     source="p.json")
    with pytest.raises(ConfigError, match="host_warmth.*frontend_s"):
        validate(ModelProfile, {**data, "host_warmth": [{**CURVE[0], "frontend_s": -1}]}, source="p.json")


def test_calibrations_paced_points_carry_the_servers_cpu_by_thread():
    points = [WarmthPoint(0.0, 500, 0.001, 0.0012, 0.5, stub_cpu_s=0.0009, frontend_s=0.00015, model_thread_s=0.0002),
              WarmthPoint(1.0, 8, 0.002, 0.0035, 0.01, stub_cpu_s=0.0018, frontend_s=0.0008, model_thread_s=0.0007)]
    ref = ServicePoint(1, 100, compute_s=[0.001] * 20, cpu_s=[0.0009] * 20)
    curve = warmth_curve(points, ref)
    assert [(w.frontend_s, w.model_thread_s) for w in curve] == [(0.00015, 0.0002), (0.0008, 0.0007)]
    points[1].frontend_s = None                       # not read at every pause: at none
    assert all(w.frontend_s is None and w.model_thread_s is None for w in warmth_curve(points, ref))


def test_a_request_after_the_server_idled_is_handled_slower_and_one_beside_another_faster(tmp_path, monkeypatch):
    """On 2 shared cores: the first request, after a second with nothing to do, is handled in
    3 x 10 ms; a second one arriving with it (another copy) finds the front end busy: 0.5 x."""
    _cores(monkeypatch, 2)
    flat = _latencies(tmp_path, [1.0], host_warmth=[{k: v for k, v in w.items() if k in ("idle_s", "factor")}
                                                    for w in CURVE])
    (cold,) = _latencies(tmp_path, [1.0], host_warmth=CURVE)
    assert cold - flat[0] == pytest.approx(0.02, abs=1e-6)                         # 30 ms against 10
    second, first = sorted(_latencies(tmp_path, [1.0, 1.0], copies=2, host_warmth=CURVE))
    # both decode at once on the two cores; the second has 5 ms to do, the first 30
    assert first - second == pytest.approx(0.025, abs=1e-6)


def test_the_model_threads_cool_with_the_model(tmp_path, monkeypatch):
    """On one core the model's threads share it with the stub: after the model idled a second
    they take 80 ms (the curve's), not the profile's 40."""
    _cores(monkeypatch, 1)
    (warm,) = _latencies(tmp_path, [1.0], host_warmth=[{**w, "model_thread_s": 0.04} for w in CURVE])
    (cold,) = _latencies(tmp_path, [1.0], host_warmth=CURVE)
    assert cold - warm == pytest.approx(0.04, abs=1e-6)


def test_a_gpu_instance_keeps_the_request_cost_as_calibrated(tmp_path):
    assert _latencies(tmp_path, [1.0, 4.0], instance="ml.g4dn.xlarge", host_warmth=CURVE) == \
        _latencies(tmp_path, [1.0, 4.0], instance="ml.g4dn.xlarge")
