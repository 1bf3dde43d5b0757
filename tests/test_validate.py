"""Validation on synthetic pairs whose errors are known by construction."""

import csv
import json
from pathlib import Path

import pytest

from mmesim.cli import main
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import load_profile
from mmesim.results.compare import compare, parse_tolerance
from mmesim.results.records import OK, RequestRecord, Records, Run
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.workload import Workload

PROFILE = Path(__file__).parent.parent / "calibration" / "profiles" / "tiny-mlp-python-cpu.json"


def steady_run(rate: float, rt_s: float, kind: str) -> Run:
    """10 users for 20 s then 20 users for 20 s, a request every 1/rate s taking rt_s each."""
    rec = Records()
    n = int(40 * rate)
    for i in range(n):
        start = i / rate + 0.001
        rec.add(RequestRecord(start, start + rt_s, "m-v0", 0, OK, False))
    return Run(records=rec, duration_s=40.0, users=[(0.0, 10), (20.0, 20)], user_steps=[10, 20], kind=kind)


def test_known_errors_are_reported_and_judged():
    pred = summarize(steady_run(10, 0.100, "prediction"))
    meas = summarize(steady_run(8, 0.125, "measurement"))
    assert (pred.throughput_qps, meas.throughput_qps) == (pytest.approx(10), pytest.approx(8))
    c = compare(pred, meas)                                   # default: throughput 5 %, p50 and p95 10 %
    err = {x.figure: x.error for x in c.lines}
    assert err["throughput"] == pytest.approx(0.25)           # 10 vs 8 req/s
    assert err["p50"] == pytest.approx(-0.2) and err["p95"] == pytest.approx(-0.2)   # 100 vs 125 ms
    assert err["users"] == 0                                  # same max users, absolute difference
    assert not c.passed and {x.figure for x in c.failed} == {"throughput", "p50", "p95"}
    step20 = {x.figure: x.error for x in c.steps if x.users == 20}
    assert step20["rps"] == pytest.approx(0.25) and step20["p50"] == pytest.approx(-0.2)
    assert compare(pred, meas, parse_tolerance("throughput=0.26,p50=0.21,p95=0.21")).passed
    assert compare(pred, meas, parse_tolerance("p50=0.21"), check_steps=True).passed
    assert not compare(pred, meas, parse_tolerance("p50=0.19"), check_steps=True).passed


def test_tolerance_errors_name_the_flag():
    assert parse_tolerance("throughput=0.05, users=0") == {"throughput": 0.05, "users": 0.0}
    with pytest.raises(ConfigError, match="--tolerance.*speed"):
        parse_tolerance("speed=0.1")
    with pytest.raises(ConfigError, match="figure=number"):
        parse_tolerance("p50=ten")


def _write_measured(folder: Path, run: Run, stretch: float, t0: float = 1.8e9) -> None:
    """A load test folder as mmesim loadtest writes it, from ``run`` with every response time
    multiplied by ``stretch``."""
    folder.mkdir()
    with (folder / "requests-local-1.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(Records.COLUMNS)
        for r in run.records:
            w.writerow((f"{t0 + r.start:.6f}", f"{t0 + r.start + stretch * (r.end - r.start):.6f}", r.model, -1,
                        r.outcome, 0))
    (folder / "start.json").write_text(json.dumps({"t0": t0}))
    with (folder / "users.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("time", "users"))
        w.writerows((f"{t0 + t:.6f}", n) for t, n in run.users)
    (folder / "loadtest.json").write_text(json.dumps({
        "user_steps": run.user_steps, "request_name": run.request_name, "duration_s": run.duration_s,
        "instance_type": "local", "copies": run.copies, "profiles": run.profiles}))


def _ramp(tmp_path: Path) -> tuple[Path, Run]:
    """A 2 -> 4 user ramp on tiny-mlp x2: its workload file and its prediction (seed 0)."""
    from mmesim.workload import load_workload
    wl_path = tmp_path / "ramp.yaml"
    wl_path.write_text("kind: users\nwait_s: [0.05, 0.2]\nuser_steps: [2, 4]\n"
                       "stages:\n  - {end_s: 10, users: 2, spawn_rate: 2}\n  - {end_s: 20, users: 4, spawn_rate: 2}\n")
    return wl_path, simulate([load_profile(PROFILE)], EndpointConfig(instance_type="local"), load_workload(wl_path),
                             copies=[2], seed=0)


def test_validate_cli_exits_nonzero_beyond_tolerance(tmp_path, capsys):
    wl_path, pred = _ramp(tmp_path)
    _write_measured(tmp_path / "measured", pred, stretch=1.25)
    args = ["validate", "--profile", str(PROFILE), "--instance", "local", "--copies", "2", "--workload", str(wl_path),
            "--measured", str(tmp_path / "measured"), "--out", str(tmp_path / "out")]
    assert main(args) == 1                                          # p50 and p95 20 % low: beyond 10 %
    out = capsys.readouterr().out
    assert "beyond tolerance" in out and "-20.0%" in out
    # the shipped profile's placement of woken threads, taken on local, and said so
    assert "host placement: 30 % of threads woken beside a running one take its core" in " ".join(out.split())
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    fig = {x["figure"]: x for x in report["figures"]}
    # the request log keeps microseconds, so a p50 of a few ms carries up to ~1e-3 of rounding
    assert fig["p50"]["error"] == pytest.approx(-0.2, abs=2e-3) and fig["p50"]["ok"] is False
    assert fig["requests"]["error"] == pytest.approx(0.0)
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "comparison.csv").read_text().count("\n") > 10
    assert main(args + ["--tolerance", "p50=0.21,p95=0.21"]) == 0   # the same pair within 21 %


def test_a_load_test_where_nothing_finished_still_summarises(tmp_path):
    # e.g. every request still waiting for its model when the test stopped
    from mmesim.results.measured import measured_run
    empty = Run(records=Records(), duration_s=10.0, users=[(0.0, 2)], user_steps=[2], kind="measurement")
    _write_measured(tmp_path / "m", empty, stretch=1.0)
    s = summarize(measured_run(tmp_path / "m"))
    assert (s.requests, s.throughput_qps, s.p50_ms) == (0, 0.0, None)


def test_a_folder_without_request_logs_is_named(tmp_path):
    from mmesim.results.measured import measured_run
    with pytest.raises(ConfigError, match=f"{tmp_path}.*requests-"):
        measured_run(tmp_path)


def test_figures_a_load_test_cannot_see_are_unknown_not_zero(tmp_path):
    """A Locust run sees requests, not the platform: its cold starts, loads and unloads are
    None with no source (the Locust log's cold column is all 0s), not "measured 0"; the
    emulator's own log fills them in, named as their source."""
    from mmesim.loadtest.validate import Validation, with_platform
    from mmesim.results.measured import measured_run
    wl = Workload(kind="users", wait_s=[0.05, 0.2], user_steps=[2],
                  stages=[{"end_s": 10, "users": 2, "spawn_rate": 2}])
    pred = simulate([load_profile(PROFILE)], EndpointConfig(instance_type="local"), wl, copies=[3], seed=0, warm=False)
    _write_measured(tmp_path / "measured", pred, stretch=1.0)
    meas = measured_run(tmp_path / "measured")
    ps, ms = summarize(pred), summarize(meas)
    assert ps.cold_starts >= ps.loads >= 1 and ps.sources["loads"] == "simulator"
    assert (ms.cold_starts, ms.loads, ms.unloads) == (None, None, None)
    assert ms.sources["p50_ms"] == ms.sources["requests"] == "locust" and "cold_starts" not in ms.sources
    v = Validation(pred, meas, ps, ms, compare(ps, ms))
    line = {x.figure: x for x in v.comparison.lines}
    assert (line["cold_starts"].measured, line["cold_starts"].error, line["cold_starts"].source) == (None, None, None)
    assert line["p50"].source == "locust" and line["p50"].error == pytest.approx(0.0, abs=2e-3)
    emulator_summary = {"cold_starts": 4, "loads": 3, "unloads": 0, "p50_ms": 999.0}   # as summary.json holds
    with_platform(v, emulator_summary, out=tmp_path)
    line = {x.figure: x for x in v.comparison.lines}
    assert (line["cold_starts"].measured, line["cold_starts"].source) == (4, "emulator log")
    assert line["cold_starts"].error == pytest.approx((ps.cold_starts - 4) / 4)
    assert line["loads"].error == pytest.approx((ps.loads - 3) / 3)
    assert line["p50"].measured == ms.p50_ms and line["p50"].source == "locust"     # request figures stay Locust's
    saved = {x["figure"]: x for x in json.loads((tmp_path / "comparison.json").read_text())["figures"]}
    assert saved["unloads"]["measured"] == 0 and saved["unloads"]["source"] == "emulator log"


def test_validate_takes_the_platform_figures_from_the_emulators_log(tmp_path, capsys):
    wl_path = tmp_path / "w.yaml"
    wl_path.write_text("kind: users\nwait_s: [0.05, 0.2]\nuser_steps: [2]\nstages:\n  - {end_s: 10, users: 2, spawn_rate: 2}\n")
    from mmesim.workload import load_workload
    pred = simulate([load_profile(PROFILE)], EndpointConfig(instance_type="local"), load_workload(wl_path),
                    copies=[2], seed=0, warm=False)
    _write_measured(tmp_path / "measured", pred, stretch=1.0)
    (tmp_path / "emu").mkdir()
    args = ["validate", "--profile", str(PROFILE), "--instance", "local", "--copies", "2", "--workload", str(wl_path),
            "--measured", str(tmp_path / "measured"), "--out", str(tmp_path / "out"), "--cold",
            "--platform-log", str(tmp_path / "emu"), "--tolerance", "p50=0.5"]
    assert main(args) == 2                                 # no summary.json there: refused before simulating
    err = capsys.readouterr().err
    assert "--platform-log" in err and "summary.json" in err and "Traceback" not in err
    (tmp_path / "emu" / "summary.json").write_text(json.dumps({"cold_starts": 2, "loads": "two", "unloads": 0}))
    assert main(args) == 2 and "field 'loads'" in capsys.readouterr().err
    (tmp_path / "emu" / "summary.json").write_text(json.dumps({"cold_starts": 2, "loads": 2, "unloads": 0}))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "emulator log" in out and "locust" in out          # the "measured by" column
    fig = {x["figure"]: x for x in json.loads((tmp_path / "out" / "comparison.json").read_text())["figures"]}
    assert (fig["loads"]["measured"], fig["loads"]["source"]) == (2, "emulator log")
    assert fig["loads"]["predicted"] == summarize(pred).loads and fig["p50"]["source"] == "locust"


def test_validate_says_what_the_prediction_warns_of(tmp_path, capsys):
    """A profile calibrated on another processor, validated on local: the comparison is
    followed by the prediction's note naming it (and none for one made here)."""
    from mmesim.catalog import host_cpu
    wl_path = tmp_path / "w.yaml"
    wl_path.write_text("kind: users\nwait_s: [0.05, 0.2]\nuser_steps: [2]\nstages:\n  - {end_s: 10, users: 2, spawn_rate: 2}\n")
    from mmesim.workload import load_workload
    pred = simulate([load_profile(PROFILE)], EndpointConfig(instance_type="local"), load_workload(wl_path),
                    copies=[2], seed=0, warm=False)
    _write_measured(tmp_path / "measured", pred, stretch=1.0)
    notes = {}
    for where in ("Some Other CPU 9000", host_cpu()):
        profile = load_profile(PROFILE)
        profile = profile.model_copy(update={"provenance": profile.provenance.model_copy(update={"host_cpu": where})})
        path = tmp_path / f"{len(notes)}.json"
        path.write_text(profile.model_dump_json())
        main(["validate", "--profile", str(path), "--instance", "local", "--copies", "2", "--workload", str(wl_path),
              "--measured", str(tmp_path / "measured"), "--out", str(tmp_path / f"out{len(notes)}"), "--cold"])
        notes[where] = " ".join(capsys.readouterr().out.split())
    assert "note (prediction): profiles calibrated on another processor" in notes["Some Other CPU 9000"]
    assert "Some Other CPU 9000" in notes["Some Other CPU 9000"]
    assert "another processor" not in notes[host_cpu()]


def test_repeats_are_compared_through_their_median_and_show_their_range():
    """Three repeats of one load test, response times 100, 150 and 125 ms: each figure is their
    median (125 ms), with their range (100-150); a prediction of 100 ms misses by 20 % yet lies
    inside the range, one of 90 ms lies outside it. The tolerances still judge the median."""
    runs = [summarize(steady_run(10, rt, "measurement")) for rt in (0.100, 0.150, 0.125)]
    c = compare(summarize(steady_run(10, 0.100, "prediction")), runs)
    line = {x.figure: x for x in c.lines}
    assert c.repeats == 3 and line["p50"].measured == pytest.approx(125)
    assert line["p50"].measured_range == (pytest.approx(100), pytest.approx(150))
    assert line["p50"].error == pytest.approx(-0.2) and line["p50"].ok is False and line["p50"].within_range
    assert line["throughput"].ok and line["requests"].measured == runs[0].requests      # the same count each time
    assert {x.figure for x in c.misses_within_range} == {"p50", "p95"}
    step = {x.figure: x for x in c.steps if x.users == 20}
    assert step["p50"].measured == pytest.approx(125) and step["p50"].measured_range == (pytest.approx(100),
                                                                                         pytest.approx(150))
    outside = compare(summarize(steady_run(10, 0.090, "prediction")), runs)
    assert {x.figure: x.within_range for x in outside.lines}["p50"] is False and not outside.misses_within_range
    traced = [runs[0].model_copy(update={"server": {"queue_p50_ms": 1.0}}), *runs[1:]]   # seen by one repeat only
    pred = summarize(steady_run(10, 0.100, "prediction")).model_copy(update={"server": {"queue_p50_ms": 1.2}})
    queue = {x.figure: x for x in compare(pred, traced).lines}["queue p50"]
    assert queue.measured == 1.0 and queue.measured_range is None and queue.within_range is None
    once = compare(summarize(steady_run(10, 0.100, "prediction")), runs[0])    # one measurement: no range
    assert once.repeats == 1 and all(x.measured_range is None and x.within_range is None for x in once.lines)


def test_validate_takes_several_measured_folders_as_repeats(tmp_path, capsys):
    wl_path, pred = _ramp(tmp_path)
    for name, stretch in (("a", 0.9), ("b", 1.5), ("c", 1.25)):
        _write_measured(tmp_path / name, pred, stretch=stretch)
    args = ["validate", "--profile", str(PROFILE), "--instance", "local", "--copies", "2", "--workload", str(wl_path),
            "--out", str(tmp_path / "out")]
    for name in "abc":
        args += ["--measured", str(tmp_path / name)]
    assert main(args) == 1                                   # the median is 25 % slower: beyond 10 %
    out = " ".join(capsys.readouterr().out.split())
    assert "range of 3 runs" in out and "within the 3 runs' own range: p50, p95" in out
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    fig = {x["figure"]: x for x in report["figures"]}
    assert report["repeats"] == 3
    assert fig["p50"]["error"] == pytest.approx(-0.2, abs=2e-3) and fig["p50"]["within_range"] is True
    low, high = fig["p50"]["measured_range"]
    assert high / low == pytest.approx(1.5 / 0.9, rel=2e-3)
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    p50 = next(r for r in rows if r["figure"] == "p50" and not r["users"])
    assert float(p50["measured_max"]) / float(p50["measured_min"]) == pytest.approx(1.5 / 0.9, rel=2e-3)
    assert p50["within_range"] == "1"
    for folder in ("measurement", "measurement-2", "measurement-3"):    # each repeat's own figures
        assert (tmp_path / "out" / folder / "summary.json").is_file()
    p50s = [json.loads((tmp_path / "out" / f / "summary.json").read_text())["p50_ms"]
            for f in ("measurement", "measurement-2", "measurement-3")]
    assert p50s[1] / p50s[0] == pytest.approx(1.5 / 0.9, rel=2e-3) and p50s[2] / p50s[0] == pytest.approx(1.25 / 0.9,
                                                                                                         rel=2e-3)
    from mmesim.report.html import run_page
    page = run_page(tmp_path / "out").read_text()
    assert "3 repeats of the load test" in page and "measured range (3 runs)" in page
    (tmp_path / "emu").mkdir()                                # the emulator's log belongs to one load test
    (tmp_path / "emu" / "summary.json").write_text(json.dumps({"cold_starts": 2, "loads": 2, "unloads": 0}))
    assert main(args + ["--platform-log", str(tmp_path / "emu")]) == 2
    assert "--platform-log" in capsys.readouterr().err


def test_the_clients_cpu_per_request_is_compared_where_both_sides_have_it(tmp_path):
    """A prediction charges its generator model's CPU per request; a measurement has what its
    Locust processes spent: the comparison shows both (an ideal client has none, and no line)."""
    wl = Workload(stages=[{"end_s": 10, "users": 2, "spawn_rate": 10}], wait_s=(0.0, 0.01),
                  generator={"workers": 1, "cpu_s_per_request": 0.0008, "timed_share": 0.6, "on_host": True})
    endpoint = EndpointConfig(instance_type="local")
    pred = summarize(simulate([load_profile(PROFILE)], endpoint, wl, copies=[2], seed=0))
    assert pred.client_cpu_ms_per_request == pytest.approx(0.8, rel=0.02)
    assert pred.sources["client_cpu_ms_per_request"] == "simulator"
    ideal = summarize(simulate([load_profile(PROFILE)], endpoint, wl.model_copy(update={"generator": None}),
                               copies=[2], seed=0))
    assert ideal.client_cpu_ms_per_request is None
    run = steady_run(10, 0.010, "measurement")
    run.generator_busy_s, run.generator_cpu_s_per_request = [0.16], 0.0004
    meas = summarize(run)
    assert meas.client_cpu_ms_per_request == pytest.approx(0.4)
    name = "client cpu ms per request"
    line = {x.figure: x for x in compare(pred, meas).lines}[name]
    assert (line.measured, line.error) == (pytest.approx(0.4), pytest.approx(pred.client_cpu_ms_per_request / 0.4 - 1))
    assert line.source == "locust process" and line.tolerance is None
    unmeasured = summarize(steady_run(10, 0.010, "measurement"))
    assert all(name not in {x.figure for x in compare(p, m).lines} for p, m in ((ideal, meas), (pred, unmeasured)))


def test_a_measurement_is_compared_with_the_load_test_it_ran(tmp_path, capsys):
    """`mmesim loadtest` records its workload beside the logs: `validate --measured` predicts
    that workload and those copies unless told otherwise, and refuses, before simulating, a
    prediction of another workload or other copies (which would read as a model error),
    naming the file, the figure and both values."""
    wl_path, pred = _ramp(tmp_path)
    _write_measured(tmp_path / "m", pred, stretch=1.0)
    base = ["validate", "--profile", str(PROFILE), "--instance", "local", "--measured", str(tmp_path / "m"),
            "--out", str(tmp_path / "out")]
    # without --workload, an older folder (no workload.json) would be predicted under the blog's 340 s
    assert main(base) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "loadtest.json: field 'duration_s': value 20.0: the load test ran 20.0, the prediction's is 340.0" in err
    (tmp_path / "m" / "workload.json").write_text(json.dumps(load_workload_dict(wl_path)))
    assert main(base + ["--json"]) == 0                        # its workload, its copies: the same run
    report = json.loads(capsys.readouterr().out)
    fig = {x["figure"]: x for x in report["figures"]}
    assert fig["requests"]["error"] == pytest.approx(0.0) and fig["p50"]["error"] == pytest.approx(0.0, abs=2e-3)
    for extra, field, value in ((["--copies", "3"], "copies", "[2]"),
                                (["--workload", "blog"], "duration_s", "20.0")):
        assert main(base + extra) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"field '{field}': value {value}" in err and "--copies 2" in err
    longer = tmp_path / "steps.yaml"
    longer.write_text(wl_path.read_text().replace("user_steps: [2, 4]", "user_steps: [4]"))
    assert main(base + ["--workload", str(longer)]) == 2
    assert "field 'user_steps': value [2, 4]" in " ".join(capsys.readouterr().err.split())


def load_workload_dict(path: Path) -> dict:
    from mmesim.workload import load_workload
    return load_workload(path).model_dump(mode="json")
