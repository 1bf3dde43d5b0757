"""Run real Locust against an endpoint and return the measured Run.

``workers=0`` runs one Locust process (Locust's LocalRunner); ``workers=N`` runs a master and
N worker processes on this host, the way the reference ran its load test. Locust runs as
child processes (its gevent monkey-patching stays out of the caller), each in its own
process group, stopped by PID when the test ends, fails or is interrupted.

Workers on other hosts: start ``locust -f <mmesim/loadtest/locustfile.py> --worker
--master-host HOST`` there with MMESIM_LOADTEST_PLAN naming a copy of this run's plan.json,
and pass ``expect_workers`` = local + remote; their request logs stay on their hosts (copy
them into the output folder before adapting it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mmesim.errors import MmesimError
from mmesim.process import die_with_parent
from mmesim.loadtest.live_stats import LiveStats, latest
from mmesim.loadtest.plan import check_endpoint, make_plan
from mmesim.serde import check_out_folder
from mmesim.profile import ModelProfile
from mmesim.results.measured import LOCUST_PREFIX, WORKLOAD_FILE, LoadTestInfo, measured_run
from mmesim.results.records import Run
from mmesim.workload import Workload

LOCUSTFILE = Path(__file__).with_name("locustfile.py")   # never imported here: it monkey-patches
GENERATOR_BUSY_WARN = 0.5     # a sending process busy more than this share of the run limits the load


class LoadTestError(MmesimError):
    """Locust failed to run; carries the tail of its log."""


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run_loadtest(endpoint_url: str, endpoint_name: str | None, workload: Workload, profiles: list[ModelProfile],
                 copies: list[int], out: Path, workers: int = 0, protocol: str = "sagemaker",
                 payload: str = "json", *, inputs: list[list[str]] | None = None, seed: int = 0,
                 timeout_s: float = 60.0, web_ui: int | None = None, expect_workers: int | None = None,
                 instance_type: str = "", instance_count: int = 1, price_usd_per_hour: float = 0.0,
                 client: str = "http", progress: Callable[[float, float, LiveStats | None], None] | None = None,
                 **aws) -> Run:
    """Load-test ``endpoint_url`` with ``workload`` over the copies of ``profiles`` (the
    simulator's target names) and return the measured Run (kind "measurement").

    ``protocol`` "sagemaker": boto3's sagemaker-runtime InvokeEndpoint (the emulator or a
    live endpoint; ``aws`` goes to boto3.client: region_name, credentials); "triton":
    Triton's SageMaker-protocol server, POST /models/{target}/invoke. ``payload``: KServe v2
    "json" or Triton's "binary" tensors. ``client``: "http" (python-requests, or boto3 for
    SageMaker's protocol) or "fast" (Locust's FastHttpUser: geventhttpclient, requests signed
    with botocore's SigV4 for SageMaker's), a far lighter load generator. ``web_ui``: a port for Locust's web UI (the test
    still starts by itself). Writes Locust's CSVs (full history), the request logs and
    loadtest.json and the workload (workload.json) into ``out``. ``progress(elapsed_s, duration_s, stats)`` hears Locust's own
    latest figures (users, requests/s, failures) about once a second while it runs."""
    check_endpoint(endpoint_url, endpoint_name, protocol, workers, client)
    out = check_out_folder(out)                     # made there, before anything runs
    for old in [*out.glob("requests-*.csv"), *out.glob("process-*.json"), out / "start.json", out / "stop.json", out / "users.csv"]:
        old.unlink(missing_ok=True)
    if protocol == "sagemaker":
        aws.setdefault("region_name", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    senders = max(1, workers if workers else 1)
    plan = make_plan(endpoint_url, endpoint_name, workload, profiles, list(copies), out, processes=senders,
                     protocol=protocol, payload=payload, inputs=inputs, seed=seed, timeout_s=timeout_s, aws=aws,
                     client=client)
    plan_path = plan.write(out / "plan.json")
    request_name = {t["name"]: t["request_name"] for t in plan.targets}
    LoadTestInfo(kind=workload.kind, user_steps=list(workload.user_steps), request_name=request_name, duration_s=workload.duration_s,
                 instance_type=instance_type, instance_count=instance_count, price_usd_per_hour=price_usd_per_hour,
                 workers=workers, copies=list(copies), profiles=[p.name for p in profiles]).write(out)
    (out / WORKLOAD_FILE).write_text(workload.model_dump_json(indent=1))   # what `validate --measured` predicts

    user_class = ("Fast" if client == "fast" else "") + ("InvokeUser" if workload.kind == "users" else "ArrivalUser")
    env = dict(os.environ, MMESIM_LOADTEST_PLAN=str(plan_path), PYTHONUNBUFFERED="1")
    if protocol == "sagemaker" and ("//127.0.0.1" in endpoint_url or "//localhost" in endpoint_url):
        env.setdefault("AWS_ACCESS_KEY_ID", "mmesim")          # a local emulator: any key signs
        env.setdefault("AWS_SECRET_ACCESS_KEY", "mmesim")
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", endpoint_url, "--loglevel", "WARNING"]
    ui = (["--autostart", "--autoquit", "0", "--web-host", "127.0.0.1", "--web-port", str(web_ui)]
          if web_ui else ["--headless"])
    main = [*base, *ui, "--csv", str(out / LOCUST_PREFIX), "--csv-full-history", "--only-summary",
            "--logfile", str(out / "locust.log"), user_class]
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        if workers:
            port = _free_port()
            main[-1:-1] = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                           "--expect-workers", str(expect_workers or workers)]
            procs.append(_spawn(main, env, out / "locust-master.out", logs))
            for i in range(workers):
                cmd = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                       "--logfile", str(out / f"locust-worker-{i}.log"), user_class]
                procs.append(_spawn(cmd, env, out / f"locust-worker-{i}.out", logs))
        else:
            procs.append(_spawn(main, env, out / "locust.out", logs))
        limit = workload.duration_s + timeout_s + 60 + (30 if workers else 0)
        _watch(procs[0], limit, workload.duration_s, out / f"{LOCUST_PREFIX}_stats_history.csv", progress,
               f"see {out}/locust.log")
        for p in procs[1:]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
    finally:
        _stop(procs)
        for fh in logs:
            fh.close()
    if not (out / "start.json").is_file() or not list(out.glob("requests-*.csv")):
        tail = "\n".join((out / ("locust-master.out" if workers else "locust.out")).read_text(errors="replace")
                         .splitlines()[-30:])
        raise LoadTestError(f"Locust ran no load test (rc {procs[0].returncode}); its output:\n{tail}")
    return measured_run(out)


def _watch(proc: subprocess.Popen, limit: float, duration_s: float, history: Path,
           progress: Callable[[float, float, LiveStats | None], None] | None, where: str) -> None:
    """Wait for Locust (its master) to end, telling ``progress`` its live figures each second."""
    started = time.monotonic()
    while True:
        try:
            proc.wait(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            if elapsed > limit:
                raise LoadTestError(f"Locust did not finish within {limit:.0f} s; {where}") from None
            if progress:
                progress(min(elapsed, duration_s), duration_s, latest(history))


def _spawn(cmd: list[str], env: dict, out_path: Path, logs: list) -> subprocess.Popen:
    fh = out_path.open("wb")
    logs.append(fh)
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)
