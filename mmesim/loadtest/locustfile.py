"""The Locust file mmesim runs (``locust -f`` this file, with MMESIM_LOADTEST_PLAN naming a
plan written by mmesim.loadtest.plan). Real Locust users invoke the endpoint; the Workload
decides who sends what:

- ``InvokeUser``: closed-loop users (workload kind ``users``), wait uniform(wait_s) between
  answers; ``WorkloadShape`` moves their count with ``mmesim.dispatch.stage_at``, the rule the
  simulator shares;
- ``ArrivalUser``: one per Locust process, sends open-loop arrivals (Poisson rates or a
  replayed trace) without waiting for answers;
- ``FastInvokeUser``, ``FastArrivalUser``: the same on Locust's FastHttpUser (geventhttpclient,
  a fraction of the CPU per request of python-requests or boto3): the plan's ``client`` "fast".

Every request is timed from BEFORE its body is serialised (as the reference timed it),
reported to Locust under its request name, and written to this process's request log in
the RequestRecords CSV format (unix times), which mmesim.results.measured turns into a Run.
"""

from __future__ import annotations

import bisect
import csv
import json
import os
import random
import resource
import time
from itertools import accumulate
from pathlib import Path

import gevent
import locust.stats
from locust import FastHttpUser, LoadTestShape, User, between, events, task
from locust.runners import MasterRunner, WorkerRunner

from mmesim.dispatch import stage_at
from mmesim.loadtest.plan import Plan
from mmesim.results.records import (EXECUTION_OOM, INTERNAL, MODEL_ERROR, OK, OUTCOMES, TIMEOUT, VALIDATION,
                                    model_error_cause)

PLAN = Plan.read(os.environ["MMESIM_LOADTEST_PLAN"])
# Locust writes a stats-history row each second but flushes the file every 5 s; mmesim's
# progress display reads the file as it grows, so flush with every row.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = locust.stats.CSV_STATS_INTERVAL_SEC
REQUEST_TYPE = "InvokeEndpoint"


class Log:
    """This process's request log, CPU use and request count."""

    def __init__(self):
        self.fh = None
        self.requests = 0
        self.timed_cpu_s = 0.0       # this thread's CPU inside request timers (exact while one is in flight)
        self.cpu0 = self._cpu()

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def open(self, role: str) -> None:
        folder = Path(PLAN.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.path = folder / f"requests-{role}-{os.getpid()}.csv"
        self.fh = self.path.open("w", newline="")
        self.writer = csv.writer(self.fh)
        self.writer.writerow(("start", "end", "model", "instance", "outcome", "cold"))
        self.cpu0 = self._cpu()
        self.wall0 = time.time()

    def write(self, start: float, end: float, target: str, outcome: str) -> None:
        self.requests += 1
        if self.fh is not None:
            self.writer.writerow((f"{start:.6f}", f"{end:.6f}", target, -1, outcome, 0))

    def close(self) -> None:
        if self.fh is None:
            return
        self.fh.close()
        self.fh = None
        info = {"role": self.role, "pid": os.getpid(), "requests": self.requests, "cpu_s": self._cpu() - self.cpu0,
                "timed_cpu_s": self.timed_cpu_s, "wall_s": time.time() - self.wall0}
        (Path(PLAN.log_dir) / f"process-{self.role}-{os.getpid()}.json").write_text(json.dumps(info))


LOG = Log()
_rng = random.Random(PLAN.seed * 1000 + os.getpid())
_targets = [t["name"] for t in PLAN.targets]
_request_names = [t["request_name"] for t in PLAN.targets]
_cdf = list(accumulate(t["weight"] for t in PLAN.targets))


def pick() -> int:
    return min(bisect.bisect_right(_cdf, _rng.random() * _cdf[-1]), len(_cdf) - 1)


def _outcome(exc: BaseException) -> str:
    """SageMaker's error code of a failed invocation, as RequestRecords name outcomes."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    if code == MODEL_ERROR:         # the container's own error: its message says why
        return model_error_cause(str(exc.response.get("OriginalMessage") or exc.response["Error"].get("Message", "")))
    if code in OUTCOMES:
        return code
    if code in ("ModelNotReady", "ModelNotReadyException"):
        return "ModelNotReadyException"
    if code:
        return INTERNAL if code.startswith("Internal") else VALIDATION if code.startswith("Validation") else code
    name = type(exc).__name__
    if "timeout" in name.lower():
        return TIMEOUT
    return getattr(exc, "outcome", INTERNAL)


class HttpStatus(Exception):
    """A non-200 answer of Triton's SageMaker-protocol endpoint."""

    OUTCOME = {400: VALIDATION, 404: VALIDATION, 424: "ModelError", 429: "ModelNotReadyException",
               500: INTERNAL, 503: "ServiceUnavailable", 507: "InsufficientMemory"}

    def __init__(self, status: int, body: bytes):
        self.outcome = self.OUTCOME.get(status, INTERNAL)
        try:     # Triton's own words, with the Python stub's traceback when a model raised
            said = str(json.loads(body)["error"]).strip()
        except (ValueError, KeyError, TypeError):
            said = repr(body[:200])
        if status >= 500 and model_error_cause(said) == EXECUTION_OOM:     # the backend ran out of memory
            self.outcome = EXECUTION_OOM
        super().__init__(f"HTTP {status} ({self.outcome}): {said[:2000]}")


def _client():
    """What sends one invocation: boto3's sagemaker-runtime client or Triton's own endpoint."""
    if PLAN.protocol == "sagemaker":
        import boto3
        from botocore.config import Config
        client = boto3.client("sagemaker-runtime", endpoint_url=PLAN.endpoint_url, **PLAN.aws,
                              config=Config(max_pool_connections=1000, retries={"total_max_attempts": 1},
                                            read_timeout=PLAN.timeout_s, connect_timeout=10))

        def invoke(target: str, body: bytes, content_type: str) -> None:
            client.invoke_endpoint(EndpointName=PLAN.endpoint_name, TargetModel=target, Body=body,
                                   ContentType=content_type)["Body"].read()
        return invoke
    import requests
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=1000))
    base = PLAN.endpoint_url.rstrip("/")

    def invoke(target: str, body: bytes, content_type: str) -> None:
        r = session.post(f"{base}/models/{target}/invoke", data=body, headers={"Content-Type": content_type},
                         timeout=(10, PLAN.timeout_s))
        if r.status_code != 200:
            raise HttpStatus(r.status_code, r.content)
    return invoke


def _fast_client(user: FastHttpUser):
    """One invocation through a FastHttpUser's own geventhttpclient connection pool (its
    ``client``), without FastHttpSession's timing and events (``send`` times from before the
    body is built). SageMaker's protocol is signed with botocore's SigV4 signer, the one boto3
    uses, without boto3's request stack."""
    from geventhttpclient import URL
    base = URL(PLAN.endpoint_url.rstrip("/") + "/")
    http = user.client.client.clientpool.get_client(base)
    prefix = base.path.rstrip("/")
    if PLAN.protocol == "sagemaker":
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        region = PLAN.aws.get("region_name") or "us-east-1"
        signer = SigV4Auth(boto3.Session(**{k: v for k, v in PLAN.aws.items() if k != "region_name"})
                           .get_credentials().get_frozen_credentials(), "sagemaker", region)
        path = f"{prefix}/endpoints/{PLAN.endpoint_name}/invocations"
        url = PLAN.endpoint_url.rstrip("/") + path[len(prefix):]

        def invoke(target: str, body: bytes, content_type: str) -> None:
            req = AWSRequest("POST", url, data=body, headers={"Content-Type": content_type,
                                                              "X-Amzn-SageMaker-Target-Model": target})
            signer.add_auth(req)
            _check(http.request("POST", path, body=body, headers=dict(req.headers.items())))
        return invoke

    def invoke(target: str, body: bytes, content_type: str) -> None:
        _check(http.request("POST", f"{prefix}/models/{target}/invoke", body=body,
                            headers={"Content-Type": content_type}))
    return invoke


def _check(resp) -> None:
    """Read the whole answer (a connection is reused only then); a non-200 status fails."""
    body = resp.read()
    if resp.status_code != 200:
        exc = HttpStatus(resp.status_code, body)
        code = (resp.get("x-amzn-errortype") or "").split(":")[0]    # SageMaker's error code, when given
        if code:
            try:      # SageMaker's error body: a ModelError carries the container's own message
                said = json.loads(body).get("OriginalMessage", "")
            except (ValueError, AttributeError):
                said = ""
            exc.response = {"Error": {"Code": code}, "OriginalMessage": said}
            exc.outcome = _outcome(exc)
        raise exc


_payloads = None
_invoke = None


def send(environment, index: int, invoke=None) -> None:
    """One timed invocation of target ``index`` (through ``invoke``, or this process's client):
    timer, body, call, Locust event, log line."""
    global _payloads, _invoke
    if _payloads is None:
        _payloads = PLAN.payloads()
    if invoke is None:
        if _invoke is None:
            _invoke = _client()
        invoke = _invoke
    target = PLAN.targets[index]
    payload = _payloads[target["payload"]]
    cpu0 = time.thread_time()
    start_unix, start = time.time(), time.perf_counter()      # before the body is serialised
    exc = None
    try:
        body, content_type = payload.body()
        invoke(target["name"], body, content_type)
    except Exception as e:       # a failed request fails alone
        exc = e
    elapsed = time.perf_counter() - start
    LOG.timed_cpu_s += time.thread_time() - cpu0
    environment.events.request.fire(request_type=REQUEST_TYPE, name=_request_names[index],
                                    response_time=elapsed * 1000.0, response_length=0, exception=exc, context={})
    LOG.write(start_unix, start_unix + elapsed, target["name"], OK if exc is None else _outcome(exc))


class InvokeUser(User):
    """A closed-loop user: invoke, wait uniform(wait_s), invoke again."""

    wait_time = between(*PLAN.wait_s)

    @task
    def invoke(self):
        send(self.environment, pick())


class FastInvokeUser(FastHttpUser):
    """InvokeUser on Locust's FastHttpUser: invocations go through its geventhttpclient pool."""

    wait_time = between(*PLAN.wait_s)
    network_timeout = PLAN.timeout_s
    connection_timeout = 10.0

    def on_start(self):
        self._invoke = _fast_client(self)

    @task
    def invoke(self):
        send(self.environment, pick(), self._invoke)


class ArrivalUser(User):
    """Open-loop arrivals for this process: its share of the Poisson rates, or its rows of the
    trace; each request runs in its own greenlet so slow answers do not delay arrivals."""

    wait_time = between(0, 0)

    @task
    def arrivals(self):
        _arrivals(self.environment, None)


class FastArrivalUser(FastHttpUser):
    """ArrivalUser on Locust's FastHttpUser (its pool holds as many connections as requests
    in flight)."""

    wait_time = between(0, 0)
    network_timeout = PLAN.timeout_s
    connection_timeout = 10.0
    concurrency = 1000

    @task
    def arrivals(self):
        _arrivals(self.environment, _fast_client(self))


def _arrivals(env, invoke) -> None:
    """This process's open-loop arrivals, each request in its own greenlet."""
    share, index = PLAN.processes, _process_index(env)
    began = time.time()
    pending = gevent.pool.Group()
    by_name = {n: i for i, n in enumerate(_targets)}
    if PLAN.kind == "poisson":
        t = 0.0
        for step in PLAN.rates:
            while step["rate"] > 0:
                t += _rng.expovariate(step["rate"] / share)
                if t >= step["end_s"]:
                    t = step["end_s"]
                    break
                _sleep_until(began + t)
                pending.spawn(send, env, pick(), invoke)
            t = max(t, step["end_s"])
    else:
        for i, (when, name) in enumerate(PLAN.trace):
            if i % share == index:
                _sleep_until(began + when)
                pending.spawn(send, env, by_name[name], invoke)
    _sleep_until(began + PLAN.duration_s)
    pending.join(timeout=PLAN.timeout_s)
    gevent.sleep(3600)            # the shape stops the test


def _sleep_until(unix_t: float) -> None:
    delay = unix_t - time.time()
    if delay > 0:
        gevent.sleep(delay)


def _process_index(environment) -> int:
    runner = environment.runner
    return getattr(runner, "worker_index", 0) % max(1, PLAN.processes)


class WorkloadShape(LoadTestShape):
    """Stages of closed-loop users through ``mmesim.dispatch.stage_at`` (Locust's own dispatcher
    then moves the count in its batches), or one ArrivalUser per process for open loops."""

    def reset_time(self):
        super().reset_time()
        (Path(PLAN.log_dir) / "start.json").write_text(json.dumps({"t0": time.time()}))

    def tick(self):
        t = self.get_run_time()
        if PLAN.kind == "users":
            stage = stage_at(PLAN.stages_typed, t)
            return None if stage is None else (stage.users, stage.spawn_rate)
        if t >= PLAN.duration_s:
            return None
        return (PLAN.processes, max(1.0, float(PLAN.processes)))


@events.init.add_listener
def _on_init(environment, **_kw):
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        LOG.open("worker")
        return
    LOG.open("master" if isinstance(runner, MasterRunner) else "local")
    gevent.spawn(_sample_users, runner)


def _sample_users(runner) -> None:
    """The user count as Locust reports it, each change with its time (users.csv)."""
    path = Path(PLAN.log_dir) / "users.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("time", "users"))
        last = None
        while True:
            n = runner.user_count
            if n != last:
                w.writerow((f"{time.time():.6f}", n))
                fh.flush()
                last = n
            gevent.sleep(0.02)


@events.test_stopping.add_listener
def _on_stopping(environment, **_kw):
    """When the shape ended the test, and how many requests Locust's statistics had counted by
    then (its _stats.csv is rewritten once a second, not at the end, so it can be a second
    behind: this count is the one the request log's cut at ``t`` matches)."""
    if not isinstance(environment.runner, WorkerRunner):
        (Path(PLAN.log_dir) / "stop.json").write_text(json.dumps(
            {"t": time.time(), "requests": environment.stats.total.num_requests}))


@events.quit.add_listener
def _on_quit(**_kw):
    LOG.close()
