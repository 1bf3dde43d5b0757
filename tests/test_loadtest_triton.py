"""Locust against a real Triton in SageMaker MME mode: both payload formats reach the model,
and `mmesim validate --endpoint-url` runs prediction, load test and comparison end to end."""

import json
import time
from pathlib import Path

import pytest
from conftest import loaded_copies

from mmesim.cli import main
from mmesim.loadtest import run_loadtest
from mmesim.profile import load_profile
from mmesim.results.summary import summarize
from mmesim.triton import execlog
from mmesim.triton.client import MMEClient
from mmesim.workload import Workload

pytestmark = pytest.mark.triton
PROFILE = Path(__file__).parent.parent / "calibration" / "profiles" / "tiny-mlp-python-cpu.json"


@pytest.fixture(scope="module")
def triton(tmp_path_factory, triton_server):
    """The session's server with two copies of tiny-mlp loaded (unloaded afterwards)."""
    yield from loaded_copies(triton_server, tmp_path_factory.mktemp("triton"), "tiny-mlp")


@pytest.mark.parametrize("payload", ["json", "binary"])
def test_both_payload_formats_are_served(triton, tmp_path, payload):
    wl = Workload(kind="users", stages=[{"end_s": 5, "users": 2, "spawn_rate": 2}], wait_s=(0.05, 0.1))
    run = run_loadtest(triton.sagemaker_url, None, wl, [load_profile(PROFILE)], [2], tmp_path, protocol="triton",
                       payload=payload)
    s = summarize(run)
    assert s.requests > 20 and s.failures == 0
    assert {r.model for r in run.records} == {"tiny-mlp-v0", "tiny-mlp-v1"}


def test_each_execution_is_logged_by_its_stub(triton, tmp_path):
    """The model's own log (MMESIM_EXEC_LOG) has every execution of the load test: the requests
    they served add up to those Locust had answered (and at most one more per user: a request
    in flight when the users stopped is executed but not recorded), and a thread's CPU and wait
    for a core fit in its wall clock."""
    wl = Workload(kind="users", stages=[{"end_s": 4, "users": 3, "spawn_rate": 3}], wait_s=(0.0, 0.01))
    began = time.monotonic_ns()
    run = run_loadtest(triton.sagemaker_url, None, wl, [load_profile(PROFILE)], [2], tmp_path, protocol="triton",
                       payload="binary")
    log = execlog.read(triton.options.exec_log, (began, time.monotonic_ns()))
    mine = [i for i, m in enumerate(log["model"]) if m.startswith("tiny-mlp-v")]
    served = sum(r.ok for r in run.records)
    assert served > 50 and served <= int(log["requests"][mine].sum()) <= served + 3
    assert set(log["model"][i] for i in mine) == {"tiny-mlp-v0", "tiny-mlp-v1"}
    # a thread runs, waits for a core or sleeps: its CPU and its wait fit in the wall clock
    # (two clocks: a VM's may disagree by 0.1 ms)
    cpu, wait, wall = log["cpu"][mine], log["wait"][mine], log["wall"][mine]
    assert (cpu > 0).all() and (wait >= 0).all() and (cpu + wait <= wall + 0.25).all()
    assert (log["items"][mine] == log["requests"][mine]).all()            # one item a request
    assert (log["call"][mine] >= 0).all() and (log["call"][mine] <= log["wall"][mine]).all()
    parts = execlog.breakdown(log)
    assert parts["alone"]["n"] + parts["overlapped"]["n"] == parts["all"]["n"] == len(log["model"])
    assert "alone" in execlog.describe(parts)


def test_an_unloaded_target_fails_alone(triton, tmp_path):
    # three copies targeted, two loaded: the third copy's requests fail, the others do not
    wl = Workload(kind="users", stages=[{"end_s": 5, "users": 2, "spawn_rate": 2}], wait_s=(0.05, 0.1))
    run = run_loadtest(triton.sagemaker_url, None, wl, [load_profile(PROFILE)], [3], tmp_path, protocol="triton")
    bad = [r for r in run.records if r.model == "tiny-mlp-v2"]
    good = [r for r in run.records if r.model != "tiny-mlp-v2"]
    assert bad and all(not r.ok for r in bad) and all(r.ok for r in good)
    assert summarize(run).failures == len(bad)


@pytest.mark.alone         # validate's tolerances hold for this host's cores, not for cores shared with other tests
def test_validate_against_the_real_server(triton, tmp_path):
    wl = tmp_path / "ramp.yaml"
    wl.write_text("kind: users\nwait_s: [0.05, 0.1]\nuser_steps: [1, 2]\n"
                  "stages:\n  - {end_s: 5, users: 1, spawn_rate: 1}\n  - {end_s: 10, users: 2, spawn_rate: 1}\n")
    rc = main(["validate", "--profile", str(PROFILE), "--instance", "local", "--memory-budget", "2GiB",
               "--copies", "2", "--workload", str(wl), "--endpoint-url", triton.sagemaker_url, "--protocol", "triton",
               "--tolerance", "users=0", "--repeat", "2", "--out", str(tmp_path / "v")])
    report = json.loads((tmp_path / "v" / "comparison.json").read_text())
    fig = {x["figure"]: x for x in report["figures"]}
    assert fig["requests"]["measured"] > 30 and fig["failures"]["measured"] == 0
    assert fig["users"]["predicted"] == fig["users"]["measured"] == 2
    assert rc == 0 and report["passed"]
    # the load test ran twice, each with its own Locust files; the figures are their median
    assert report["repeats"] == 2
    p50s = [json.loads((tmp_path / "v" / f / "summary.json").read_text())["p50_ms"] for f in ("measurement",
                                                                                          "measurement-2")]
    assert fig["p50"]["measured_range"] == [min(p50s), max(p50s)]
    assert fig["p50"]["measured"] == pytest.approx(sum(p50s) / 2)
    for folder in ("measurement", "measurement-2"):
        assert (tmp_path / "v" / folder / "locust_stats_history.csv").is_file()
    assert (tmp_path / "v" / "overlay.png").is_file()


def test_a_model_that_raises_shows_the_stubs_traceback_in_the_failures(triton, tmp_path):
    """Triton's own error, the Python stub's traceback included, is what the failures CSV says."""
    repo = tmp_path / "repo" / "raiser"
    (repo / "1").mkdir(parents=True)
    (repo / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 16\ninput [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 64 ] } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ] } ]\n')
    (repo / "1" / "model.py").write_text("class TritonPythonModel:\n    def execute(self, requests):\n"
                                         "        raise ValueError('the model raised this')\n")
    client = MMEClient(triton.sagemaker_url)
    client.load("tiny-mlp-v3", str(repo.parent))
    try:
        wl = Workload(kind="users", stages=[{"end_s": 4, "users": 2, "spawn_rate": 2}], wait_s=(0.05, 0.1))
        run = run_loadtest(triton.sagemaker_url, None, wl, [load_profile(PROFILE)], [4], tmp_path / "lt",
                           protocol="triton")
    finally:
        client.unload("tiny-mlp-v3")
        client.close()
    assert any(not r.ok for r in run.records if r.model == "tiny-mlp-v3")
    failures = (tmp_path / "lt" / "locust_failures.csv").read_text()
    assert "ValueError: the model raised this" in failures and "model.py(3): execute" in failures
