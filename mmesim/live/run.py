"""The steps after deploy: load-test the live endpoint, read its CloudWatch metrics, and the
whole run (deploy, load test, metrics, teardown) with teardown guaranteed."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmesim.errors import ConfigError, MissingPiece
from mmesim.live.deployment import Deployment, LivePlan, deploy, teardown
from mmesim.live.metrics import read_metrics
from mmesim.results import cloudwatch


@dataclass
class LiveResult:
    run: object                     # mmesim.results.records.Run, measured by the load test
    metrics: list                   # CloudWatch Datapoints of the endpoint during the load test
    files: dict[str, Path]


def _run_loadtest():
    try:
        from mmesim.loadtest import run_loadtest
    except ImportError as exc:
        raise MissingPiece("live loadtest needs mmesim.loadtest.run_loadtest (the load generator, "
                           f"`pip install mmesim[loadtest]`), which this installation lacks: {exc}") from None
    return run_loadtest


def loadtest(dep: Deployment, workload, profiles, copies: list[int], out: str | Path, *, workers: int = 0,
             payload: str = "json"):
    """Load-test the deployed endpoint through boto3's sagemaker-runtime; the measured Run.
    The start and end are written to the state file, for reading metrics later."""
    run_loadtest = _run_loadtest()
    from mmesim.catalog import load_catalog
    s = dep.state
    url = s["endpoint_urls"].get("sagemaker-runtime") or f"https://runtime.sagemaker.{s['region']}.amazonaws.com"
    dep.note("loadtest_start", dt.datetime.now(dt.timezone.utc).isoformat())
    run = run_loadtest(url, s["endpoint"], workload, profiles, copies, Path(out), workers, "sagemaker", payload,
                       region_name=s["region"])
    dep.note("loadtest_end", dt.datetime.now(dt.timezone.utc).isoformat())
    if not run.instance_type:
        it = load_catalog().instance(s["instance_type"])
        run.instance_type, run.instance_count, run.price_usd_per_hour = it.name, s["instance_count"], \
            it.price_usd_per_hour
    return run


def metrics(dep: Deployment, out: str | Path | None = None, *, start: dt.datetime | None = None,
            end: dt.datetime | None = None) -> list:
    """CloudWatch datapoints of the endpoint over the load test (or ``start``..``end``);
    with ``out``, also written as ``<out>/cloudwatch_live.csv`` (the prediction's format)."""
    s = dep.state
    start = start or dt.datetime.fromisoformat(s.get("loadtest_start") or s.get("in_service_at") or s["created_at"])
    end = end or (dt.datetime.fromisoformat(s["loadtest_end"]) if s.get("loadtest_end")
                  else dt.datetime.now(dt.timezone.utc))
    points = read_metrics(dep.client("cloudwatch"), s["endpoint"] or s["name"], start,
                          end + dt.timedelta(seconds=cloudwatch.PERIOD_S), variant=s.get("variant", "AllTraffic"))
    if out is not None:
        cloudwatch.write_points_csv(points, Path(out) / "cloudwatch_live.csv")
    return points


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM ends a live run the way Ctrl-C does: through teardown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_live(plan: LivePlan, state_path: str | Path, workload, profiles, copies: list[int], out: str | Path, *,
             yes_spend: bool, workers: int = 0, payload: str = "json", progress: Callable[[str], None] = print,
             poll_s: float = 15.0, timeout_s: float = 3600) -> LiveResult:
    """Deploy, wait for InService, load-test, read CloudWatch, and always tear down (on
    success, on errors, on Ctrl-C or SIGTERM). Outputs go to ``out``."""
    from mmesim.outputs import write_outputs
    from mmesim.results.summary import observed, summarize

    from mmesim.loadtest.plan import check_targets
    from mmesim.serde import check_out_folder

    _run_loadtest()                        # fail before spending anything if the load generator is missing
    check_targets(workload, profiles, copies)       # ... or the load test's copies, mix or trace are wrong
    out = check_out_folder(out)
    if workers < 0:
        raise ConfigError("Locust worker processes: 0 (one local process) or more", field="--workers", value=workers)
    with sigterm_as_interrupt():
        dep = deploy(plan, state_path, yes_spend=yes_spend, progress=progress, poll_s=poll_s, timeout_s=timeout_s)
        try:
            run = loadtest(dep, workload, profiles, copies, out, workers=workers, payload=payload)
            points = metrics(dep, out)      # what the load test cannot see, CloudWatch counted
            files = write_outputs(run, observed(summarize(run), cloudwatch.platform_counts(points), "cloudwatch"), out)
            files["cloudwatch_live"] = out / "cloudwatch_live.csv"
            result = LiveResult(run, points, files)
        finally:
            teardown(dep, progress=progress, poll_s=poll_s)
    result.files["live_state"] = out / "live_state.json"        # what was created, and that it is gone
    result.files["live_state"].write_text(json.dumps(dep.state, indent=2))
    return result
