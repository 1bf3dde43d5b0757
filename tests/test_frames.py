"""DataFrames: a run, its steps, its summary, a comparison and a sweep as pandas frames, and
any output folder read back into the same frames; without pandas, one line naming the extra."""

import sys

import pytest

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.frames import comparison_frame, read_folder, steps_frame, summary_frame, sweep_frame
from mmesim.outputs import write_outputs
from mmesim.profile import load_profile
from mmesim.results.compare import compare
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import Workload

pd = pytest.importorskip("pandas")

STEPS = Workload(name="steps", stages=[{"end_s": 20, "users": 5, "spawn_rate": 5},
                                       {"end_s": 40, "users": 20, "spawn_rate": 5}])


@pytest.fixture(scope="module")
def run():
    return simulate([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.g4dn.xlarge"), STEPS,
                    copies=3, seed=1)


def test_one_row_per_request_with_the_summary_s_figures(run):
    df = run.to_pandas()
    s = summarize(run)
    assert len(df) == s.requests == len(run.records)
    assert int((~df["ok"]).sum()) == s.failures
    assert df.loc[df["ok"], "latency_ms"].quantile(0.5, interpolation="lower") <= s.p50_ms * 1.0001
    assert {5, 20} <= set(df["users"]) <= {5, 10, 15, 20}       # 5, ramping by 5/s, then 20
    # the per-user step rows count the same requests as the frame's users column
    steps = steps_frame(s)
    assert steps.loc[20, "requests"] == int((df["users"] == 20).sum())
    assert steps.loc[20, "rps"] > steps.loc[5, "rps"]          # more users, more requests per second


def test_an_output_folder_reads_back_as_the_same_frames(run, tmp_path):
    s = summarize(run)
    write_outputs(run, s, tmp_path / "pred")
    back = read_folder(tmp_path / "pred")
    assert back.summary.requests == s.requests and back.summary.p95_ms == pytest.approx(s.p95_ms)
    assert len(back.requests) == len(run.records)
    assert back.requests["latency_ms"].mean() == pytest.approx(run.to_pandas()["latency_ms"].mean(), rel=1e-5)
    assert back.steps["requests"].sum() == steps_frame(s)["requests"].sum()
    assert back.figures.loc["prediction", "requests"] == s.requests


def test_a_comparison_and_two_summaries(run):
    other = simulate([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.g4dn.xlarge",
                                                                          instance_count=2), STEPS, copies=3, seed=1)
    a, b = summarize(run), summarize(other)
    both = summary_frame(a, b, names=["one", "two"])
    assert list(both.index) == ["one", "two"]
    assert both.loc["two", "cost_per_hour_usd"] == pytest.approx(2 * both.loc["one", "cost_per_hour_usd"])
    cmp = comparison_frame(compare(a, b))
    row = cmp[(cmp["scope"] == "run") & (cmp["figure"] == "p95")].iloc[0]
    assert row["error"] == pytest.approx((a.p95_ms - b.p95_ms) / b.p95_ms)
    assert {5, 20} <= set(cmp.loc[cmp["scope"] == "step", "users"])


def test_sweep_rows_become_a_grid_and_its_folder_reads_back(tmp_path):
    from mmesim.plan.sweep import write_sweep
    rows = [{"instance_count": n, "seed": s, "p95_ms": 10.0 * n + s, "error_rate": 0.0} for n in (1, 2) for s in (0, 1)]
    df = sweep_frame(rows)
    assert df.pivot(index="instance_count", columns="seed", values="p95_ms").loc[2, 1] == 21.0
    write_sweep(rows, {"instance_count": [1, 2], "seed": [0, 1]}, tmp_path)
    back = read_folder(tmp_path)
    assert back[list(df.columns)].equals(df)


def test_without_pandas_one_line_names_the_extra(monkeypatch, run, tmp_path):
    monkeypatch.setitem(sys.modules, "pandas", None)         # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mmesim\[pandas\]'"):
        run.to_pandas()
    with pytest.raises(ConfigError, match=r"mmesim\[pandas\]"):
        steps_frame(summarize(run))


def test_a_folder_without_a_summary_is_named(tmp_path):
    with pytest.raises(ConfigError, match="summary.json") as e:
        read_folder(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_a_validation_folder_reads_back_with_both_runs_and_the_comparison(run, tmp_path):
    from mmesim.loadtest.validate import Validation, write_validation
    other = simulate([load_profile("resnet50-pytorch-t4")], EndpointConfig(instance_type="ml.g4dn.xlarge"), STEPS,
                     copies=3, seed=2)
    a, b = summarize(run), summarize(other)
    write_validation(Validation(run, other, a, b, compare(a, b)), tmp_path)
    back = read_folder(tmp_path)
    assert list(back.figures.index) == ["prediction", "measurement"]
    assert back.figures.loc["measurement", "requests"] == b.requests == len(back.measurement.requests)
    p95 = back.comparison[(back.comparison["scope"] == "run") & (back.comparison["figure"] == "p95")].iloc[0]
    assert p95["predicted"] == pytest.approx(a.p95_ms) and p95["measured"] == pytest.approx(b.p95_ms)
