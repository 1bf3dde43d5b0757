"""Bad input is rejected before anything runs, with the file, the field and the value."""

import json

import pytest

from conftest import make_profile
from mmesim.catalog import load_catalog
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import load_profile
from mmesim.workload import load_workload


def test_catalogue_is_complete():
    c = load_catalog()
    assert {"t4", "a10g", "v100", "l4", "l40s", "a100-40gb", "a100-80gb", "h100", "h200"} <= set(c.gpus)
    assert c.gpu("t4").nvml_total_mib == 15109
    families = {name.split(".")[1] for name in c.instances}
    assert {"g4dn", "g5", "g6", "g6e", "p3"} <= families
    assert c.instance("g4dn.2xlarge").vcpus == 8
    with pytest.raises(ConfigError, match="ml.x1.huge"):
        EndpointConfig(instance_type="ml.x1.huge")


def test_profile_round_trips(tmp_path):
    p = make_profile()
    path = p.save(tmp_path / "p.json")
    assert load_profile(path) == p
    path = p.save(tmp_path / "p.yaml")
    assert load_profile(path) == p


def test_bad_profile_names_file_field_value(tmp_path):
    data = make_profile().to_dict()
    data["service"][0]["seconds"] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    msg = str(e.value)
    assert "bad.json" in msg and "service[0].seconds" in msg and "-1" in msg

    data = make_profile().to_dict()
    data["gpu_memory_byte"] = 5    # a typo must not pass silently
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="gpu_memory_byte"):
        load_profile(path)

    data = make_profile().to_dict()
    data["gpu"] = "x100"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="bad.json.*gpu.*x100.*unknown GPU"):
        load_profile(path)

    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profile(path)
    with pytest.raises(ConfigError, match="no built-in profile"):
        load_profile("nonesuch-pytorch-t4")


def test_bad_workload_and_trace(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("kind: users\nstages:\n  - {end_s: 30, users: 10, spawn_rate: 5}\n  - {end_s: 20, users: 5, spawn_rate: 1}\n")
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_workload(path)
    path.write_text("kind: users\nstages:\n  - {end_s: 30, users: -1, spawn_rate: 5}\n")
    with pytest.raises(ConfigError) as e:
        load_workload(path)
    assert "w.yaml" in str(e.value) and "stages[0].users" in str(e.value)

    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,model\n0.5,a-v0\nsoon,a-v0\n")
    path.write_text(f"kind: trace\ntrace: {trace.name}\n")
    from mmesim.sim import Simulation
    with pytest.raises(ConfigError) as e:
        Simulation([make_profile(name="a")], EndpointConfig(instance_type="ml.g4dn.2xlarge"), load_workload(path), [1])
    assert "t.csv:3" in str(e.value) and "soon" in str(e.value)

    trace.write_text("timestamp,model\n0.5,b-v0\n")
    with pytest.raises(ConfigError, match="not a target"):
        Simulation([make_profile(name="a")], EndpointConfig(instance_type="ml.g4dn.2xlarge"), load_workload(path), [1])
