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
