"""`make gpu-check`'s CPU dry run: the same script as on a GPU host, with a tiny model in
every framework this machine serves, against the real tritonserver."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tritonclient")
pytest.importorskip("psutil")

from mmesim.calibrate.gpu_check import frameworks, main  # noqa: E402
from mmesim.cli import main as mmesim  # noqa: E402
from mmesim.profile import load_profile  # noqa: E402

pytestmark = pytest.mark.triton



@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    code = main(["--device", "cpu", "--out", str(out)])
    return code, out, json.loads((out / "report.json").read_text())


def test_dry_run_calibrates_every_framework_here_and_leaves_nothing(dry_run):
    code, out, report = dry_run
    available, skipped = frameworks("cpu")
    assert code == 0 and report["ok"]
    assert report["frameworks"] == available and "python" in available
    assert "tensorrt" in skipped and "GPU" in report["skipped_frameworks"]["tensorrt"]
    assert [(r["model"], r["framework"]) for r in report["runs"]] == [("tiny-bert", f) for f in available]
    assert report["gpu"] is None and report["leftover_processes"] == [] and report["leftover_shm"] == []
    for run in report["runs"]:
        profile = load_profile(run["profile"])
        assert profile.framework == run["framework"] and profile.gpu == "cpu"
        assert sorted(run["scaling"]) == ["1", "2"] and run["max_models"] >= 1
        assert run["process_overhead_mib"] > 0 and run["gpu_memory_mib"] > run["process_overhead_mib"]
        assert (out / "profiles" / f"{profile.name}.calibration.json").is_file()
    # the Python backend's executions, alone, by batch: on a CPU the model's call is the work
    (python,) = [r for r in report["runs"] if r["framework"] == "python"]
    assert set(python["executions"]) == {"1", "4"}
    for batch in python["executions"].values():
        assert batch["n"] >= 2 and 0.5 * batch["wall_ms"] < batch["call_ms"] <= batch["wall_ms"]
        # each execution's wall is its call plus what follows; medians keep that order, not the sum
        assert 0 <= batch["after_ms"] <= batch["wall_ms"]
    assert "executions" not in next(r for r in report["runs"] if r["framework"] != "python")


def test_dry_runs_onnx_profile_is_a_real_onnxruntime_measurement_simulate_accepts(dry_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _, out, report = dry_run
    (run,) = [r for r in report["runs"] if r["framework"] == "onnx"]
    profile = load_profile(run["profile"])
    assert "onnxruntime inside the python backend" in profile.provenance.source
    assert profile.service[-1].batch == 4 and profile.service[-1].seconds > 0
    wl = tmp_path / "light.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 10, rate: 20}]\n")
    assert mmesim(["simulate", "--profile", run["profile"], "--instance", "local", "--memory-budget", "2GiB",
                   "--copies", "2", "--workload", str(wl), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] > 100 and summary["failures"] == 0


def test_on_a_gpu_each_framework_left_out_says_why():
    """What this machine's tritonserver and packages allow on cuda:0, read for real."""
    available, skipped = frameworks("cuda:0")
    assert "python" in available and "tensorrt" in skipped
    if "onnx" not in available:
        assert "onnxruntime" in skipped["onnx"]
    assert set(available) | set(skipped) == {"python", "pytorch", "onnx", "tensorrt"}


def test_bad_arguments_are_one_line(capsys):
    assert main(["--device", "cuda:x"]) == 2
    assert "field '--device'" in capsys.readouterr().err
    assert main(["--device", "cpu", "--memory-cap", "lots"]) == 2
    assert "--memory-cap" in capsys.readouterr().err


def test_a_region_left_by_this_process_is_found_and_another_servers_is_not():
    """Leftovers are judged by name (our pid) and by whether anyone still maps them, so a
    server someone else runs, or killed a moment ago, never fails this check."""
    import os
    from mmesim.calibrate.gpu_check import _orphaned
    from mmesim.triton.local import SHM_PREFIX
    ours, theirs = f"{SHM_PREFIX}_{os.getpid()}_test_left", f"{SHM_PREFIX}_1_test_left"
    made = [f"/dev/shm/{name}" for name in (ours, theirs)]
    try:
        for path in made:
            open(path, "wb").close()
        assert _orphaned({ours, theirs}) == [ours]
    finally:
        for path in made:
            os.unlink(path)
