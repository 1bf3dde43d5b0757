"""A freshly loaded copy's first executions take longer (profile.first_executions_s, timed by
calibrate on a fresh copy): in the simulator, in order, once per load."""

import pytest

from conftest import make_profile
from mmesim.calibrate.latency import first_extra_s
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.serde import validate
from mmesim.sim import Simulation
from mmesim.workload import Workload


def _trace(tmp_path, rows):
    path = tmp_path / "t.csv"
    path.write_text("timestamp,model\n" + "".join(f"{t},{m}\n" for t, m in rows))
    return Workload(kind="trace", trace=str(path))


@pytest.fixture
def two_cores(monkeypatch):
    import mmesim.catalog
    monkeypatch.setattr(mmesim.catalog, "host_cores", lambda: 2)


def test_a_fresh_copys_first_executions_take_longer_in_order(tmp_path, two_cores):
    """100 ms executions, one at a time, 1 s apart: the first two of each copy take 50 and
    10 ms more, the third on as profiled; another copy pays its own."""
    profile = make_profile(name="m", gpu="cpu", s1=0.1, max_batch=1, mem_mib=100, baseline_mib=100, cpu_threads=1,
                           first_executions_s=[0.05, 0.01])
    run = Simulation([profile], EndpointConfig(instance_type="local"),
                     _trace(tmp_path, [(1, "m-v0"), (2, "m-v0"), (3, "m-v0"), (4, "m-v1"), (5, "m-v0")]), [2]).run(8)
    lat = [r.end - r.start for r in sorted(run.records, key=lambda r: r.start)]
    assert lat == pytest.approx([0.15, 0.11, 0.10, 0.15, 0.10], rel=1e-5)
    # without the figure, every execution takes the profiled time
    plain = Simulation([profile.model_copy(update={"first_executions_s": []})], EndpointConfig(instance_type="local"),
                       _trace(tmp_path, [(1, "m-v0"), (2, "m-v0")]), [1]).run(4)
    assert [r.end - r.start for r in plain.records] == pytest.approx([0.1, 0.1], rel=1e-5)


def test_a_copy_loaded_again_pays_again(tmp_path):
    """Room for one copy: m-v0, then m-v1 (m-v0 unloaded), then m-v0 again: each load's first
    execution is the long one (on a GPU instance type too: the backend's warm-up is the host's)."""
    profile = make_profile(name="m", s1=0.1, max_batch=1, mem_mib=9000, baseline_mib=1000, load_s=1.0,
                           first_executions_s=[0.05])
    ep = EndpointConfig(instance_type="ml.g4dn.xlarge")            # a T4: 15 GiB, room for one 9000 MiB copy
    wl = _trace(tmp_path, [(1, "m-v0"), (4, "m-v0"), (8, "m-v1"), (12, "m-v0")])

    def latencies(p):
        run = Simulation([p], ep, wl, [2], warm=False).run(20)
        rs = sorted(run.records, key=lambda r: r.start)
        assert [r.cold for r in rs] == [True, False, True, True]        # one copy at a time
        return [r.end - r.start for r in rs]
    longer = [a - b for a, b in zip(latencies(profile), latencies(profile.model_copy(update={"first_executions_s": []})))]
    assert longer == pytest.approx([0.05, 0.0, 0.05, 0.05], abs=1e-6)


def test_calibrations_first_executions_become_extra_seconds():
    # tiny-bert's shape: 45 ms, four of about 5, then steady at 2 ms; the steady ones are not kept
    assert first_extra_s([0.045, 0.005, 0.0052, 0.0049, 0.005, 0.002, 0.0021, 0.0019], 0.002) == \
        pytest.approx([0.043, 0.003, 0.0032, 0.0029, 0.003])
    assert first_extra_s([0.0021, 0.002, 0.0019], 0.002) == []          # none 20 % longer
    assert first_extra_s([0.0019, 0.0030, 0.002], 0.002) == pytest.approx([0.0, 0.001])   # in order, up to the last slow one


def test_a_negative_figure_is_refused_by_name():
    data = make_profile().to_dict()
    with pytest.raises(ConfigError, match="p.json.*first_executions_s"):
        validate(ModelProfile, {**data, "first_executions_s": [0.01, -0.002]}, source="p.json")
