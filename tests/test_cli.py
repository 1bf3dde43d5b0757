"""`mmesim` end to end: the CLI parses, calls the library, prints, and writes its files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmesim.cli import main
from mmesim.profile import builtin_profiles, load_profile

MEASURED = sorted((Path(__file__).parent.parent / "calibration" / "profiles").glob("*-cpu.json"))

REQUIRED = ("max_models_loaded", "latency_ms", "throughput_qps", "max_concurrent_users", "p50_ms", "p95_ms", "p99_ms",
            "requests", "failures", "failures_by_cause", "cold_starts", "cost_per_million_usd")


def test_simulate_json_and_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--json",
                 "--out", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert all(k in s for k in REQUIRED)
    assert s["max_models_loaded"] == 46
    assert s["requests"] > 10_000 and s["failures"] > 0
    assert s["failures_by_cause"].keys() <= {"ServiceUnavailable", "InvocationTimeout"}
    for name in ("summary.json", "mmesim_stats.csv", "mmesim_stats_history.csv", "mmesim_failures.csv",
                 "requests.csv", "cloudwatch.csv", "steps.png", "memory.png", "max_models_trace.csv"):
        assert (out / name).stat().st_size > 100, name
    assert json.loads((out / "summary.json").read_text())["latency_ms"] == s["latency_ms"]


def test_simulate_table_and_translation(capsys):
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--instance", "ml.p3.2xlarge", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "max models loaded" in text and "translated" in text and "ml.p3.2xlarge" in text


def test_heterogeneous_endpoint(tmp_path, capsys):
    wl = tmp_path / "mix.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 60, rate: 40}]\n"
                  "popularity: {kind: mix, weights: {resnet50-pytorch-t4: 3, bert-base-uncased-pytorch-t4: 1}}\n")
    assert main(["simulate", "--profile", "resnet50-pytorch-t4", "--profile", "bert-base-uncased-pytorch-t4",
                 "--instance", "ml.g4dn.2xlarge", "--copies", "4,2", "--workload", str(wl), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["requests"] > 2000 and s["failures"] == 0


@pytest.mark.parametrize("args, words", [
    (["--profile", "{bad}", "--instance", "ml.g4dn.2xlarge"], ["bad.json", "load_s"]),
    (["--profile", "resnet50-pytorch-t4", "--instance", "ml.q9.huge"], ["instance", "ml.q9.huge"]),
    (["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--copies", "x"], ["--copies", "x"]),
    (["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--workload", "nope"], ["workload", "nope"]),
    # an output folder that cannot be made is named before the simulation runs
    (["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--out", "/proc/mmesim-out"],
     ["--out", "/proc/mmesim-out", "cannot make"]),
    (["--profile", "resnet50-pytorch-t4", "--instance", "ml.g4dn.2xlarge", "--out", "{bad}/sub"],
     ["--out", "bad.json is a file"]),
])
def test_bad_input_is_one_clear_line(tmp_path, args, words):
    bad = tmp_path / "bad.json"
    data = json.loads(builtin_profiles()["resnet50-pytorch-t4"].read_text())
    data["load_s"] = "slow"
    bad.write_text(json.dumps(data))
    args = [a.replace("{bad}", str(bad)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "mmesim.cli", "simulate", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr


def test_listings(capsys):
    assert main(["profiles", "--json"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert {"resnet50-pytorch-t4", "roberta-large-tensorrt-a10g"} <= names
    assert main(["instances"]) == 0
    assert "ml.g6e.xlarge" in capsys.readouterr().out


@pytest.mark.parametrize("path", MEASURED, ids=lambda p: p.stem)
def test_shipped_measured_profiles_simulate(path, tmp_path, capsys):
    p = load_profile(path)
    assert p.provenance.method == "measured" and p.provenance.command.startswith("mmesim calibrate")
    wl = tmp_path / "light.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 20, rate: 2}]\n")
    assert main(["simulate", "--profile", str(path), "--instance", "ml.g4dn.xlarge", "--copies", "1",
                 "--workload", str(wl), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["requests"] >= 20 and s["failures"] == 0


def test_endpoint_file_and_flags_on_top(tmp_path, capsys):
    ep = tmp_path / "endpoint.yaml"
    ep.write_text("instance_type: ml.g5.2xlarge\ninstance_count: 2\nmemory_threshold: 0.5\n")
    wl = tmp_path / "light.yaml"
    wl.write_text("kind: poisson\nrates: [{end_s: 10, rate: 10}]\n")
    assert main(["simulate", "--profile", "resnet50-pytorch-a10g", "--endpoint", str(ep), "--threshold", "0.6",
                 "--workload", str(wl), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["instance_type"] == "ml.g5.2xlarge" and s["instance_count"] == 2
    # (944 MiB + n x 280.4 MiB)(n + 1)/n first reaches 0.6 x 23028 MiB at n = 45 (70 at 0.9)
    assert s["max_models_loaded"] == 45
    ep.write_text("instance_type: ml.g5.2xlarge\nmemory_treshold: 0.5\n")
    proc = subprocess.run([sys.executable, "-m", "mmesim.cli", "simulate", "--profile", "resnet50-pytorch-a10g",
                           "--endpoint", str(ep)], capture_output=True, text=True)
    assert proc.returncode == 2 and "endpoint.yaml" in proc.stderr and "memory_treshold" in proc.stderr


@pytest.mark.parametrize("flag, value", [("--probe-seconds", "0.5"), ("--workers", "2")])
def test_measure_client_refuses_what_it_cannot_measure_before_any_load_test(tmp_path, capsys, flag, value):
    """A probe too short to hold a long pause, or the client split over Locust workers: one
    clear line naming the flag, and no load test started (nothing written)."""
    out = tmp_path / "client"
    assert main(["loadtest", "--measure-client", "--endpoint-url", "http://127.0.0.1:9", "--protocol", "triton",
                 "--profile", "tiny-bert-python-cpu", "--copies", "1", flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert flag in err and value in err and "Traceback" not in err
    assert not out.exists()
