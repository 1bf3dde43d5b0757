"""Charts: real PNGs of the expected size with content, and clear errors on bad input."""

from types import SimpleNamespace

import matplotlib.image as mpimg
import pytest

from mmesim.errors import ConfigError
from mmesim.report import plot_frameworks, plot_memory, plot_overlay, plot_run_memory, plot_steps
from mmesim.results.locust_csv import PERCENTILE_COLUMNS
from mmesim.results.records import ModelEvent, Records, Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, width_px, height_px, min_kb=15):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_kb * 1024          # axes, lines and labels, not a blank canvas
    img = mpimg.imread(path)
    assert img.shape[:2] == (height_px, width_px)
    assert img[..., :3].std() > 0.05          # not one flat colour


STEPS = [{"users": u, "requests": 600 + 10 * u, "failures": f, "rps": 20 + u / 10, "avg_ms": 150 + u,
          "p50_ms": 140 + u, "p95_ms": 250 + 2 * u, "p99_ms": 400 + 3 * u}
         for u, f in [(20, 0), (40, 0), (60, 0), (80, 0), (100, 0), (120, 0), (140, 5), (160, 40)]]


def test_steps_chart(tmp_path):
    assert_png(plot_steps(STEPS, tmp_path / "steps.png", title="resnet50 pytorch on ml.g4dn.2xlarge"), 1000, 600)


def test_steps_chart_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="nothing to plot: steps is empty"):
        plot_steps([], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="row 1 lacks 'p95_ms'"):
        plot_steps([STEPS[0], {k: v for k, v in STEPS[1].items() if k != "p95_ms"}], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="'rps' is not a number"):
        plot_steps([{**STEPS[0], "rps": "fast"}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_frameworks_chart_accepts_dicts_and_summary_objects(tmp_path):
    pt = {"latency_ms": 164, "throughput_qps": 120, "max_models_loaded": 46, "max_concurrent_users": 180}
    trt = SimpleNamespace(latency_ms=111.0, throughput_qps=142.0, max_models_loaded=23, max_concurrent_users=None)
    assert_png(plot_frameworks({"pytorch": pt, "tensorrt": trt}, tmp_path / "fw.png", title="resnet50"), 1200, 400,
               min_kb=10)


def test_frameworks_chart_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="summaries is empty"):
        plot_frameworks({}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="every metric is missing"):
        plot_frameworks({"pytorch": {}}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="pytorch: latency_ms is not a number"):
        plot_frameworks({"pytorch": {"latency_ms": "slow"}}, tmp_path / "x.png")


def memory_run() -> Run:
    gib = 1024 ** 3
    memory = [(0.0, 0, int(1.2 * gib))] + [(10.0 * k, i, int((1.2 + 0.27 * k) * gib)) for k in range(1, 40) for i in (0, 1)]
    events = [ModelEvent(10.0 * k - 2, i, f"resnet50-v{k}", "load", 2.0) for k in range(1, 40) for i in (0, 1)]
    events += [ModelEvent(300.0, 0, "resnet50-v1", "unload", 1.0)]
    return Run(records=Records(), duration_s=420.0, memory=memory, events=events, gpu_total_bytes=15109 * 1024 ** 2)


def test_memory_chart(tmp_path):
    assert_png(plot_run_memory(memory_run(), tmp_path / "mem.png"), 1000, 600)


def test_memory_chart_with_only_events(tmp_path):
    run = memory_run()
    assert_png(plot_memory([], run.events, tmp_path / "ev.png"), 1000, 600, min_kb=10)


def test_memory_chart_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="no memory samples and no model events"):
        plot_memory([], [], tmp_path / "x.png")


def history(seconds, rps_scale, rt_shift, name="Aggregated"):
    rows = []
    for s in range(seconds):
        users = min(200, 10 + 20 * (s // 30))
        row = {"Timestamp": 1_700_000_000 + s, "User Count": users, "Type": "", "Name": name,
               "Requests/s": rps_scale * users / 2, "Failures/s": 0.0 if users < 160 else 1.5,
               "Total Request Count": s * 10, "Total Failure Count": 0, "Total Median Response Time": 150,
               "Total Average Response Time": 150 + rt_shift + s / 10, "Total Min Response Time": 60,
               "Total Max Response Time": 900, "Total Average Content Size": 0}
        row.update({c: (None if s < 3 else 120 + rt_shift + users * k) for k, c in enumerate(PERCENTILE_COLUMNS, 1)})
        rows.append(row)
    return rows


def test_overlay_chart(tmp_path):
    out = plot_overlay(history(340, 1.0, 0), history(330, 0.9, 25), tmp_path / "overlay.png")
    assert_png(out, 1000, 800)


def test_overlay_chart_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="measured.*nothing to plot"):
        plot_overlay(history(10, 1, 0), [], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="predicted.*no rows named 'resnet50'"):
        plot_overlay(history(10, 1, 0), history(10, 1, 0, name="resnet50"), tmp_path / "x.png", name="resnet50")
    bad = history(5, 1, 0)
    del bad[2]["95%"]
    with pytest.raises(ConfigError, match="row 2 lacks '95%'"):
        plot_overlay(history(5, 1, 0), bad, tmp_path / "x.png")
