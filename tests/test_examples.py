"""The runnable examples keep running, and say what they claim."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heterogeneous_endpoint_thrashes_on_one_instance_not_two(tmp_path):
    (one, run1, s1), (two, run2, s2) = load("heterogeneous").compare(seed=0, out=tmp_path)
    # 60 copies need about twice one A10G's memory: one instance loads and evicts all the
    # time (as fast as its four load threads go) and sheds load; two hold every copy after
    # its first load
    assert s1.unloads > 300 and s1.failures > 0.5 * s1.requests
    assert s2.unloads == 0 and s2.loads == 60 and s2.failures == 0
    assert s2.p99_ms < s1.p50_ms
    assert (tmp_path / "2-instance" / "summary.json").is_file()
    assert {e.instance for e in run2.events if e.kind == "load"} == {0, 1}


def test_cold_burst_costs_grow_with_the_burst():
    burst = load("cold_burst").burst
    one, eight = (burst("resnet50-pytorch-a10g", "ml.g5.2xlarge", n) for n in (1, 8))
    assert one["load_s"] == 1.5 and one["ok"] == 1 and eight["ok"] == 8     # alone: the profile's load_s
    assert eight["download_s"] > one["download_s"] and eight["load_s"] > one["load_s"]
    assert eight["last_ready_s"] > one["last_ready_s"] + one["load_s"]      # four load threads: two rounds
    # one load thread: the eighth waits for seven whole loads
    serial = burst("resnet50-pytorch-a10g", "ml.g5.2xlarge", 8, load_parallelism=1)
    assert serial["last_ready_s"] > one["download_s"] + 8 * one["load_s"] - 1e-6
