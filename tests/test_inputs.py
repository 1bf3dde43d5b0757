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
    ({"h.json": b'{"packed_share": 1.5, "moved_after_s": 0.0015}'},
     ["--profile", "resnet50-pytorch-t4", "--instance", "local", "--host-wakeups", "h.json"],
     ["h.json", "packed_share", "1.5"]),
    ({"h.yaml": b"packed_share: 0.2\nmoved_after_s: 0.0015\n"},
     ["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--host-wakeups", "h.yaml"],
     ["host_wakeups", "local only"]),
    ({"h.json": b'{"packed_share": 0.3, "moved_after_s": 0.0015, "full_share": 0.9}'},
     ["--profile", "resnet50-pytorch-t4", "--instance", "local", "--host-wakeups", "h.json"],
     ["h.json", "full_share and slice_s go together"]),
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


# -- every subcommand, in-process: bad input fails in one line before anything starts ----------

STARTS = ("mmesim.sim.mme.max_models_loaded", "mmesim.sim.mme.Simulation.run", "mmesim.plan.sweep.run_tasks",
          "mmesim.plan.plan", "mmesim.loadtest.runner._spawn", "mmesim.emulator.emulator.Emulator.start",
          "mmesim.calibrate.run.start_bench", "mmesim.triton.packaging._torchscript",
          "mmesim.live.deployment.Deployment.save")


@pytest.fixture
def cli_main(tmp_path, monkeypatch, capsys):
    """``main(argv)`` in ``tmp_path`` with ``files`` written there (None: a folder); a simulation,
    Locust, Triton, the emulator's front, a plan, a package or a live deployment that starts
    fails the test (the input had to be refused first)."""
    from mmesim.cli import main

    def started(*args, **kwargs):
        raise AssertionError("started before refusing the input")
    for target in STARTS:
        monkeypatch.setattr(target, started)
    monkeypatch.chdir(tmp_path)

    def run(files: dict, args: list[str]) -> str:
        for name, data in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                path.mkdir()
            else:
                path.write_bytes(data if isinstance(data, bytes) else data.encode())
        capsys.readouterr()
        rc = main(args)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("mmesim: error: "), (rc, err)
        return err
    return run


SIM = ["simulate", "--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--workload", "w.yaml"]
T4 = "resnet50-pytorch-t4"
TRACE = {"w.yaml": "kind: trace\ntrace: t.csv\n"}
MIX = ("models:\n  - {name: bert, profile: bert-base-uncased-pytorch-t4, copies: 5, share: 1}\n"
       "traffic: {peak_rps: 10}\nslo: {p95_ms: 200}\ncandidates: {instance_types: [ml.g4dn.xlarge]}\n")
VAL = ["validate", *SIM[1:]]
REQS = "start,end,model,instance,outcome,cold\n"
LT = ["loadtest", "--endpoint-url", "http://127.0.0.1:9", "--endpoint-name", "e", "--profile", T4, "--copies", "1",
      "--workload", "w.yaml"]
EMU = ["emulate", "--port", "0", "--profile", T4, "--instance", "ml.g4dn.2xlarge", "--models", "m"]
LIVE = ["live", "deploy", "--models", "m", "--bucket", "bkt", "--instance", "ml.g4dn.2xlarge", "--role",
        "arn:aws:iam::123456789012:role/x", "--state", "s.json", "--yes-spend"]


BAD = [
    # files: syntax, keys twice, folders, empty, the wrong shape at the top
    ({"w.yaml": POISSON + "rates: [{end_s: 5, rate: 2}\n"}, SIM, ["w.yaml", "not valid YAML", "line 4"]),
    ({"w.yaml": POISSON + "kind: users\n"}, SIM, ["w.yaml", "key 'kind' given twice", "line 3"]),
    ({"p.json": None}, [*SIM[:2], "p.json", *SIM[3:5]], ["p.json", "is a folder"]),
    ({"w.yaml": ""}, SIM, ["w.yaml", "empty file"]),
    ({"e.yaml": "- instance_type: ml.g4dn.2xlarge\n", "w.yaml": POISSON}, [*SIM[:3], "--endpoint", "e.yaml", *SIM[5:]],
     ["e.yaml", "found a list"]),
    # NaN and infinity: ran forever, tracebacks, or passed every bound
    ({"w.yaml": "kind: poisson\nrates: [{end_s: 10, rate: .inf}]\n"}, SIM, ["w.yaml", "rates[0].rate", "finite"]),
    ({"w.yaml": "kind: poisson\nrates: [{end_s: .inf, rate: 1}]\n"}, SIM, ["w.yaml", "rates[0].end_s", "finite"]),
    ({"w.yaml": POISSON + "popularity: {kind: mix, weights: {resnet50-pytorch-t4: .nan}}\n"}, SIM,
     ["w.yaml", "popularity.weights", "finite"]),
    ({"w.yaml": POISSON}, [*SIM, "--timeout", "inf"], ["invocation_timeout_s", "finite"]),
    ({"w.yaml": POISSON}, [*SIM[:3], "--instance", "local", "--memory-budget", "nanGiB", *SIM[5:]],
     ["--memory-budget", "nanGiB"]),
    # workloads that say one thing and would do another
    ({"w.yaml": POISSON + "popularity: {kind: uniform, weights: {resnet50-pytorch-t4: 1}}\n"}, SIM,
     ["w.yaml", "weights apply to kind: mix only"]),
    ({"w.yaml": "kind: users\nstages: [{end_s: 10, users: 2, spawn_rate: 1}]\nrates: [{end_s: 5, rate: 2}]\n"}, SIM,
     ["w.yaml", "rates do not apply to a users workload"]),
    ({"w.yaml": "kind: poisson\nrates: [{end_s: 10, rate: 0}]\n"}, SIM, ["w.yaml", "sends no requests"]),
    ({"w.yaml": POISSON + "user_steps: [-5]\n"}, SIM, ["w.yaml", "user_steps[0]", "-5"]),
    ({"w.yaml": POISSON}, [*SIM, "--profile", T4], ["profile", "given twice", T4]),
    ({"w.yaml": POISSON, "o": "x"}, [*SIM, "--out", "o"], ["--out", "is a file"]),
    ({"w.yaml": POISSON}, [*SIM, "--seed", "-1"], ["--seed", "-1"]),
    # traces
    ({**TRACE, "t.csv": "timestamp,model\nnan,resnet50-v0\n"}, SIM, ["t.csv:2", "timestamp", "nan"]),
    ({**TRACE, "t.csv": "timestamp,model\n"}, SIM, ["t.csv", "holds no requests"]),
    ({**TRACE, "t.csv": "timestamp,model\n5,resnet50-v0\n\n1,resnet5O-v0\n"}, LT, ["t.csv:4", "resnet5O-v0"]),
    ({**TRACE, "t.csv": None}, SIM, ["t.csv", "is a folder"]),
    # validate: tolerances, and the measured folder and endpoint checked before simulating
    ({"w.yaml": POISSON, "m": None}, [*VAL, "--measured", "m", "--tolerance", "p95=nan"], ["--tolerance", "nan"]),
    ({"w.yaml": POISSON, "m": None}, [*VAL, "--measured", "m", "--tolerance", ""], ["--tolerance", "no figure"]),
    ({"w.yaml": POISSON}, [*VAL, "--measured", "m"], ["m: no such load test folder"]),
    ({"w.yaml": POISSON, "m": None}, [*VAL, "--measured", "n", "--measured", "m"], ["n: no such load test folder"]),
    ({"w.yaml": POISSON}, [*VAL, "--endpoint-url", "http://127.0.0.1:9", "--repeat", "0"], ["--repeat", "0", ">= 1"]),
    ({"w.yaml": POISSON, "m": None}, [*VAL, "--measured", "m", "--repeat", "2"],
     ["--repeat", "give --measured once per repeat"]),
    ({"w.yaml": POISSON}, [*VAL, "--endpoint-url", "localhost:8080", "--endpoint-name", "e"],
     ["--endpoint-url", "localhost:8080"]),
    # a measured load test folder from elsewhere: every file it reads
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS + "100,101\n"}, [*VAL, "--measured", "m"],
     ["requests-0.csv:2", "start and end must be numbers"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS + "101,100,resnet50-v0,0,ok,0\n"}, [*VAL, "--measured", "m"],
     ["requests-0.csv:2", "end", "end >= start"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": (REQS + "1,2,caf\xe9,0,ok,0\n").encode("latin-1")},
     [*VAL, "--measured", "m"], ["requests-0.csv", "not UTF-8"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS + "1,2,resnet50-v0,0,fine,0\n"}, [*VAL, "--measured", "m"],
     ["requests-0.csv:2", "outcome", "fine"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS, "m/start.json": "{"}, [*VAL, "--measured", "m"],
     ["start.json", "not valid JSON"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS, "m/start.json": "{}"}, [*VAL, "--measured", "m"],
     ["start.json", "t0"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS, "m/process-0.json": '{"role": "local"}'}, [*VAL, "--measured", "m"],
     ["process-0.json", "requests"]),
    ({"w.yaml": POISSON, "m/requests-0.csv": REQS, "m/loadtest.json": '{"user_steps": "20,40"}'},
     [*VAL, "--measured", "m"], ["loadtest.json", "user_steps", "expected a list"]),
    # loadtest: before Locust starts
    ({"w.yaml": POISSON}, [*LT[:2], "localhost:9", *LT[3:]], ["--endpoint-url", "localhost:9"]),
    ({"w.yaml": POISSON}, [*LT, "--workers", "-1"], ["--workers", "-1"]),
    ({"w.yaml": POISSON, "o": "x"}, [*LT, "--out", "o/run"], ["--out", "o is a file"]),
    ({"w.yaml": POISSON}, [*LT, "--profile", T4, "--copies", "1,1"], ["given twice", T4]),
    # sweep: values checked, the base file too
    ({"w.yaml": POISSON}, ["sweep", *SIM[1:], "copies=1,x"], ["copies", "'x'"]),
    ({"w.yaml": POISSON}, ["sweep", *SIM[1:], "seed=1.5"], ["seed", "1.5"]),
    ({"w.yaml": POISSON, "e.yaml": "- 1\n"}, ["sweep", *SIM[1:3], "--endpoint", "e.yaml", *SIM[5:], "seed=1"],
     ["e.yaml", "found a list"]),
    ({"w.yaml": POISSON, "o": "x"}, ["sweep", *SIM[1:], "seed=1", "--out", "o"], ["--out", "is a file"]),
    # plan
    ({"m.yaml": MIX.replace("peak_rps: 10", "peak_rps: .inf")}, ["plan", "m.yaml"], ["traffic.peak_rps", "finite"]),
    ({"m.yaml": MIX.replace("]}", "], frameworks: [pytorh]}")}, ["plan", "m.yaml"], ["candidates.frameworks", "pytorh"]),
    ({"m.yaml": MIX.replace("]}", "], frameworks: [tensorrt]}")}, ["plan", "m.yaml"],
     ["candidates.frameworks", "'bert' has no tensorrt profile"]),
    ({"m.yaml": MIX, "o": "x"}, ["plan", "m.yaml", "--out", "o"], ["--out", "is a file"]),
    # emulate: before it listens
    ({"m": None}, [*EMU, "--threshold", "5"], ["--threshold", "5"]),
    ({"m": None}, [*EMU, "--port", "70000"], ["--port", "70000"]),
    ({"m": None}, [*EMU, "--ready-timeout", "-1"], ["--ready-timeout"]),
    ({"m": None}, [*EMU, "--max-inflight", "0"], ["--max-inflight"]),
    ({"m": None}, [*EMU, "--cache-size", "lots"], ["--cache-size", "lots"]),
    ({"m": None}, [*EMU, "--memory-budget", "2GiB"], ["--memory-budget", "applies to --instance local"]),
    ({"m": None, "o": "x"}, [*EMU, "--out", "o"], ["--out", "is a file"]),
    ({"m": None, "h.yaml": "packed_share: 0.2\nmoved_after_s: 0.0015\n"}, [*EMU, "--host-wakeups", "h.yaml"],
     ["--host-wakeups", "virtual backend on --instance local"]),
    ({"m": None, "h.yaml": "packed_share: 2\nmoved_after_s: 0.0015\n"}, [*EMU, "--host-wakeups", "h.yaml"],
     ["h.yaml", "packed_share", "2"]),
    ({"m": None, "c": "x"}, [*EMU, "--cache-dir", "c"], ["--cache-dir", "is a file"]),
    ({}, ["emulate", "--port", "0", "--instance", "ml.g4dn.2xlarge"], ["--profile"]),
    ({}, ["emulate", "--port", "0", "--profile", T4, "--instance", "ml.g9.huge"], ["ml.g9.huge", "unknown instance"]),
    # package and calibrate: before building the model or starting Triton
    ({}, ["package", "--model", "tiny-mlp", "--device", "gpu0", "--out", "o"], ["--device", "gpu0"]),
    ({"o": "x"}, ["package", "--model", "tiny-mlp", "--out", "o"], ["--out", "is a file"]),
    ({}, ["package", "--model", "tiny-mlp", "--input", "x:FLOAT33:4", "--out", "o"], ["--input", "x:FLOAT33:4"]),
    ({}, ["package", "--model", "tiny-mlp", "--input", "x:FP32:0,4", "--out", "o"], ["--input", "dimensions >= 1"]),
    ({}, ["calibrate", "--model", "tiny-mlp", "--repeats", "0"], ["--repeats"]),
    ({}, ["calibrate", "--model", "tiny-mlp", "--cpu-threads", "0"], ["--cpu-threads"]),
    ({}, ["calibrate", "--model", "tiny-mlp", "--memory-budget", "nanGiB"], ["--memory-budget", "nanGiB"]),
    ({}, ["calibrate", "--model", "tiny-mlp", "--image", "triton:latest"], ["--image", "--runner docker"]),
    ({"o": "x"}, ["calibrate", "--model", "tiny-mlp", "--out", "o/p.json"], ["--out", "o is a file"]),
    # live: names AWS would refuse, before anything is created or billed
    ({"m/a.tar.gz": "x"}, [*LIVE[:5], "My_Bucket", *LIVE[6:]], ["--bucket", "My_Bucket"]),
    ({"m/a.tar.gz": "x"}, [*LIVE[:9], "myrole", *LIVE[10:]], ["--role", "myrole"]),
    ({"m/a.tar.gz": "x", "s.json": None}, LIVE, ["--state", "is a folder"]),
    ({"m/a.tar.gz": "x", "w.yaml": POISSON}, ["live", "run", *LIVE[2:], "--profile", T4, "--copies", "1,2",
                                               "--workload", "w.yaml", "--out", "o"], ["copies", "[1, 2]"]),
]


@pytest.mark.parametrize("files, args, expected", BAD, ids=[f"{a[0]}:{e[-1]}" for _, a, e in BAD])
def test_every_subcommand_refuses_bad_input_first(cli_main, files, args, expected):
    err = cli_main(files, args)
    assert all(part in err for part in expected), err


def test_live_without_credentials_says_so_before_creating_anything(cli_main, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    err = cli_main({"m/a.tar.gz": "x"}, LIVE)
    assert "no AWS credentials" in err


def test_a_trace_from_a_spreadsheet_reads(tmp_path):
    """A byte-order mark and spaces around the header names are how spreadsheets write CSV."""
    from mmesim.workload import read_trace
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefftimestamp, model\n2, b-v0\n0.5,a-v0\n".encode())
    assert read_trace(path) == [(0.5, "a-v0"), (2.0, "b-v0")]


def test_python_m_mmesim_runs_the_cli():
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-m", "mmesim", "simulate", "--profile", "nonesuch"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("mmesim: error: ") and "nonesuch" in out.stderr


def test_mix_weights_that_leave_a_profile_out_are_said_in_the_summary():
    """Leaving a profile out of a mix is weight 0 (a model kept loaded and never asked for is a
    real setup), but a misspelt name looks the same, so the summary says it."""
    from mmesim.endpoint import EndpointConfig
    from mmesim.profile import load_profile
    from mmesim.results.summary import summarize
    from mmesim.sim import Simulation
    from mmesim.workload import Workload
    wl = Workload(kind="poisson", rates=[{"end_s": 5, "rate": 20}],
                  popularity={"kind": "mix", "weights": {"resnet50-pytorch-t4": 1}})
    profiles = [load_profile("resnet50-pytorch-t4"), load_profile("bert-base-uncased-pytorch-t4")]
    run = Simulation(profiles, EndpointConfig(instance_type="ml.g4dn.2xlarge"), wl, [2, 2]).run()
    names = {r.model for r in run.records}
    assert names and all(n.startswith("resnet50") for n in names)
    assert any("leave out bert-base-uncased-pytorch-t4" in w for w in summarize(run).warnings)
