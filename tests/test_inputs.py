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


def test_a_hand_written_yaml_profile_loads_in_base_units(tmp_path):
    """What a user types (YAML, flow lists) becomes the profile's fields, unchanged units."""
    path = tmp_path / "p.yaml"
    path.write_text("name: tiny\nmodel: tiny\nframework: pytorch\ngpu: t4\nartifact_bytes: 100000000\n"
                    "gpu_memory_bytes: 1048576000\nbaseline_gpu_bytes: 990000000\nload_s: 2.5\nunload_s: 0.5\n"
                    "input_bytes: 602112\ndecode_s_per_byte: 1.0e-9\n"
                    "service: [{batch: 1, seconds: 0.01}, {batch: 8, seconds: 0.02}]\n"
                    "triton: {max_batch_size: 8}\nprovenance: {method: hand, source: tests}\n")
    p = load_profile(path)
    assert (p.gpu_memory_bytes, p.load_s, p.triton.max_batch_size) == (1000 * 2**20, 2.5, 8)
    assert (p.input_bytes, p.decode_s_per_byte) == (602112, 1e-9)
    assert [(t.batch, t.seconds) for t in p.service] == [(1, 0.01), (8, 0.02)]
    assert p == load_profile(p.save(tmp_path / "again.json"))      # and JSON holds the same


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


# -- through the CLI: one clear line naming file, field and value; never a traceback ------------

def run_cli(tmp_path, *args):
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-m", "mmesim.cli", "simulate", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stderr.strip()


POISSON = "kind: poisson\nrates: [{end_s: 10, rate: 5}]\n"


@pytest.mark.parametrize("files, args, expected", [
    ({"w.yaml": POISSON.encode() + b"name: caf\xe9\n"},
     ["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--workload", "w.yaml"],
     ["w.yaml", "not UTF-8", "0xe9"]),
    ({"p.json": b'{"name": "tiny\xff"}'}, ["--profile", "p.json", "--instance", "ml.g4dn.2xlarge"],
     ["p.json", "not UTF-8", "0xff"]),
    ({"t.csv": b"timestamp,model\n0.5,caf\xe9\n", "w.yaml": b"kind: trace\ntrace: t.csv\n"},
     ["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--workload", "w.yaml"],
     ["t.csv", "not UTF-8"]),
    ({"e.yaml": b"instance_type: ml.g9.huge\ninstance_count: 2\n"},
     ["--profile", "resnet50-pytorch-t4", "--endpoint", "e.yaml"],
     ["e.yaml", "instance_type", "ml.g9.huge", "unknown instance type"]),
    ({"w.yaml": POISSON.encode() + b"popularity: {kind: mix, weights: {resnet50-pytorch-t4: 1, resnet5O: 2}}\n"},
     ["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--workload", "w.yaml"],
     ["w.yaml", "popularity.weights", "resnet5O", "not in the endpoint"]),
])
def test_bad_input_through_the_cli(tmp_path, files, args, expected):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    rc, err = run_cli(tmp_path, *args)
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("mmesim: error: ")
    assert all(part in err for part in expected), err


def test_mix_weights_are_checked_before_any_simulation(monkeypatch, tmp_path):
    """The check comes first: max-models (the first simulation step) is never reached."""
    import mmesim.sim.mme as mme
    path = tmp_path / "w.yaml"
    path.write_text(POISSON + "popularity: {kind: mix, weights: {other: 1}}\n")

    def not_reached(*args, **kw):
        raise AssertionError("simulated before checking the workload")
    monkeypatch.setattr(mme, "max_models_loaded", not_reached)
    with pytest.raises(ConfigError, match="w.yaml.*popularity.weights.*other"):
        mme.simulate([make_profile(name="a")], EndpointConfig(instance_type="ml.g4dn.2xlarge"), load_workload(path))
