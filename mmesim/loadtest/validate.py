"""Validation: predict a load test, run it (or read one already run), compare.

The prediction and the measurement use the same Workload, the same target names and the
same Summary code, so a difference is a difference in the system, not in the arithmetic."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.loadtest.plan import check_endpoint
from mmesim.loadtest.runner import run_loadtest
from mmesim.profile import ModelProfile
from mmesim.results.compare import Comparison, compare
from mmesim.results.measured import LoadTestInfo, check_same_load_test, measured_run
from mmesim.results.records import Run
from mmesim.results.summary import Summary, history, observed, summarize
from mmesim.serde import check_out_folder
from mmesim.sim import simulate
from mmesim.triton import execlog, trace
from mmesim.workload import Workload

PLATFORM_FIGURES = ("cold_starts", "loads", "unloads")      # what a load test cannot see


@dataclass
class Validation:
    predicted: Run
    measured: Run
    predicted_summary: Summary
    measured_summary: Summary
    comparison: Comparison
    files: dict[str, Path] = field(default_factory=dict)
    comparison_tolerance: dict[str, float] | None = None
    check_steps: bool = False
    executions: dict | None = None       # measured: mmesim.triton.execlog.breakdown of the run's executions
    # every repeat of the measurement, the first being ``measured``; the comparison takes their median
    repeats: list[tuple[Run, Summary]] = field(default_factory=list)

    @property
    def measured_summaries(self) -> list[Summary]:
        return [s for _, s in self.repeats] or [self.measured_summary]


def validate(profiles: list[ModelProfile], endpoint: EndpointConfig, workload: Workload,
             copies: list[int] | int | str = "auto", *, endpoint_url: str | None = None,
             endpoint_name: str | None = None, measured: str | Path | Sequence[str | Path] | None = None,
             repeat: int = 1, out: str | Path | None = None,
             tolerance: dict[str, float] | None = None, check_steps: bool = False, seed: int = 0,
             warm: bool = True, workers: int = 0, protocol: str = "sagemaker", payload: str = "json",
             client: str = "http", progress: Callable[..., None] | None = None,
             platform_log: str | Path | None = None, server_trace: str | Path | None = None,
             exec_log: str | Path | None = None, **aws) -> Validation:
    """Simulate, then load-test ``endpoint_url`` (or read the load test folder ``measured``),
    and compare every figure (``copies`` "auto" against a measured folder: the copies it
    targeted; a folder that ran another workload or other copies is refused before
    simulating). With ``out``: prediction/ and measurement/ (all the files a
    prediction writes), comparison.json, comparison.csv and overlay.png. ``repeat``: run the
    load test that many times in a row (measurement/, measurement-2/, ...), or give several
    ``measured`` folders: each figure is compared with the repeats' median and shows their
    range (mmesim.results.compare), since a measurement differs from its own repeat too; a
    server trace and the executions' log are read over the first. ``progress(phase, done,
    total, live)`` hears both phases: "1/2 predicting" (simulated s) and "2/2 load test"
    (elapsed s, with Locust's live figures). ``platform_log``: the folder ``mmesim emulate
    --out`` wrote during that load test, for the figures a load test cannot see (see
    ``with_platform``). ``server_trace``: Triton's per-request trace of that endpoint
    (tritonserver started with ``mmesim.triton.trace.server_args``): the time requests spent in
    their model's queue and executing, measured, against the simulator's (a load test run here
    reads only the requests Triton received during it). ``exec_log``: the folder the models'
    stubs logged each execution to (``ServerOptions.exec_log``): each execution's CPU and wait
    for a core, measured (``Validation.executions``, executions.json)."""
    if (endpoint_url is None) == (measured is None):
        raise ConfigError("give either an endpoint to load-test or a measured load test folder, not both",
                          field="--endpoint-url/--measured")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ConfigError("how many times to run the load test: a whole number >= 1", field="--repeat", value=repeat)
    if repeat > 1 and measured is not None:
        raise ConfigError("repeats of a measured load test are its folders: give --measured once per repeat",
                          field="--repeat", value=repeat)
    folders = [measured] if isinstance(measured, (str, Path)) else list(measured or [])
    if measured is not None and not folders:
        raise ConfigError("no measured load test folder given", field="--measured")
    if out is not None:
        check_out_folder(out)
    if endpoint_url is not None:
        check_endpoint(endpoint_url, endpoint_name, protocol, workers, client)
    if copies == "auto" and folders:      # a measurement says how many copies it targeted
        ran = LoadTestInfo.read(Path(folders[0])).copies       # (none recorded: [])
        copies = ran if len(ran) == len(profiles) else copies
    for f in folders:            # the same load test as the one predicted, or say which figure differs
        check_same_load_test(f, workload, _copies_given(copies, len(profiles)))
    runs = [measured_run(f) for f in folders]           # a bad folder fails before simulating
    if platform_log is not None and max(repeat, len(runs)) > 1:
        raise ConfigError("the emulator's log covers one load test; with repeats its figures would be every "
                          "repeat's", field="--platform-log", value=str(platform_log))
    platform = read_platform_log(platform_log) if platform_log is not None else None
    if not runs and out is None:
        raise ConfigError("a load test needs an output folder", field="--out")
    if server_trace is not None and len(runs) > 1:
        raise ConfigError("a server trace times one load test: give one --measured folder with it",
                          field="--server-trace", value=str(server_trace))
    traced = trace.read(server_trace) if server_trace is not None and runs else None  # fails first
    if exec_log is not None and not Path(exec_log).is_dir():
        raise ConfigError("no such folder: the one the server's models log their executions to "
                          "(tritonserver started with MMESIM_EXEC_LOG set to it)", field="--exec-log", value=str(exec_log))
    pred = simulate(profiles, endpoint, workload, copies=copies, seed=seed, warm=warm,
                    progress=(lambda t, end: progress("1/2 predicting", t, end, None)) if progress else None,
                    server_timing=server_trace is not None)
    window = None       # the first load test's: what a server trace and the executions' log are read over
    it = endpoint.instance()
    for k in range(repeat if not runs else 0):
        began = time.monotonic_ns()
        phase = "2/2 load test" + (f" {k + 1}/{repeat}" if repeat > 1 else "")
        runs.append(run_loadtest(endpoint_url, endpoint_name, workload, profiles, pred.copies,
                                 Path(out) / measurement_folder(k), workers=workers, protocol=protocol, payload=payload,
                                 seed=seed + k, client=client, timeout_s=endpoint.invocation_timeout_s,
                                 instance_type=it.name, instance_count=endpoint.instance_count,
                                 price_usd_per_hour=it.price_usd_per_hour,
                                 progress=(lambda t, end, live, phase=phase: progress(phase, t, end, live)) if progress
                                 else None, **aws))
        window = window or (began, time.monotonic_ns())
    meas = runs[0]
    if server_trace is not None:
        t = traced if traced is not None else trace.read(server_trace, window)
        meas.server_ms = {"queue": t["queue"], "compute": t["compute"],
                          "start": (t["recv_ns"] - t["recv_ns"][:1]) / 1e6 + t["pre"] + t["queue"],
                          "server": t["server"]}
        meas.sources = {**meas.sources, "server": "triton trace"}
    executions = execlog.breakdown(execlog.read(exec_log, window)) if exec_log is not None else None
    ps, summaries = summarize(pred), [summarize(r) for r in runs]
    result = Validation(pred, meas, ps, summaries[0], compare(ps, summaries, tolerance, check_steps),
                        comparison_tolerance=tolerance, check_steps=check_steps, executions=executions,
                        repeats=list(zip(runs, summaries)))
    if platform is not None:
        with_platform(result, platform)
    if out is not None:
        result.files = write_validation(result, Path(out))
    return result


def _copies_given(copies, n: int) -> list[int] | None:
    """Copies per profile as the caller gave them (None for "auto": the simulator decides)."""
    if isinstance(copies, str):
        return None
    return [copies] * n if isinstance(copies, int) else list(copies)


def measurement_folder(i: int) -> str:
    """Where the ``i``-th repeat of a load test goes (from 0): measurement/, measurement-2/, ..."""
    return "measurement" if i == 0 else f"measurement-{i + 1}"


def read_platform_log(folder: str | Path) -> dict:
    """The summary.json ``mmesim emulate --out`` wrote into ``folder``, or one line naming what
    is wrong."""
    path = Path(folder) / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no summary.json there: give the folder `mmesim emulate --out` wrote",
                          field="--platform-log", value=str(folder)) from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a readable summary: {exc}", source=str(path)) from None
    for key in PLATFORM_FIGURES:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError("needs a count (an emulator's summary.json)", source=str(path), field=key, value=value)
    return data


def with_platform(v: Validation, platform: Summary | dict, source: str = "emulator log",
                  out: str | Path | None = None) -> Validation:
    """``v`` with the figures a load test cannot observe (cold starts, loads, unloads) taken
    from ``platform``, the Summary (or summary.json) of whatever saw the platform during that
    load test (``mmesim emulate --out``), named as their source; the comparison is redone
    (and its files rewritten into ``out``)."""
    if len(v.measured_summaries) > 1:
        raise ConfigError("the platform's figures belong to one load test, this validation has "
                          f"{len(v.measured_summaries)} repeats", field="--platform-log")
    data = platform if isinstance(platform, dict) else platform.model_dump()
    v.measured_summary = observed(v.measured_summary, {f: data.get(f) for f in PLATFORM_FIGURES}, source)
    v.repeats = [(v.measured, v.measured_summary)]
    v.comparison = compare(v.predicted_summary, v.measured_summary, v.comparison_tolerance, v.check_steps)
    if out is not None:
        out = Path(out)
        v.files["comparison_json"] = v.comparison.write_json(out / "comparison.json")
        v.files["comparison_csv"] = v.comparison.write_csv(out / "comparison.csv")
    return v


def write_validation(v: Validation, out: Path) -> dict[str, Path]:
    from mmesim.report.overlay import plot_overlay
    from mmesim.outputs import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    files = {f"prediction/{k}": p for k, p in write_outputs(v.predicted, v.predicted_summary, out / "prediction").items()}
    for i, (run, summary) in enumerate(v.repeats or [(v.measured, v.measured_summary)]):
        folder = measurement_folder(i)
        files.update({f"{folder}/{k}": p for k, p in write_outputs(run, summary, out / folder).items()})
    files["comparison_json"] = v.comparison.write_json(out / "comparison.json")
    files["comparison_csv"] = v.comparison.write_csv(out / "comparison.csv")
    title = f"{', '.join(v.predicted.profiles)} on {v.predicted.instance_type}: predicted vs measured"
    # one code path for both sides: history rows computed from each run's records
    files["overlay_png"] = plot_overlay(history(v.predicted), history(v.measured), out / "overlay.png", title=title)
    if v.executions is not None:
        path = out / "measurement" / "executions.json"
        path.write_text(json.dumps(v.executions, indent=2) + "\n")
        files["measurement/executions_json"] = path
    return files
