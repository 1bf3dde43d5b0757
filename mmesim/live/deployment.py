"""A live deployment: the S3 objects, SageMaker model, endpoint config and endpoint one run
creates, recorded in a state file before each is created, and deleted in reverse order.

Every AWS call is a real boto3 call; endpoints can be pointed elsewhere (the emulator's
control plane, a moto server) for rehearsal. A resource is written to the state file *before*
the call that creates it, and teardown treats "not found" as done, so whatever moment a run
dies at, ``teardown(state_file)`` removes exactly what it may have created and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmesim.errors import ConfigError, MissingPiece, MmesimError

STATE_VERSION = 1
SETUP_S = 15 * 60          # creating an MME endpoint takes about 15 minutes, billed (issue 6)
TEARDOWN_S = 5 * 60


class LiveError(MmesimError):
    """A live step failed; the message says what, and what (if anything) is left to delete."""


class SpendNotConfirmed(MmesimError):
    """Live mode creates billed resources: it needs --yes-spend."""


@dataclass
class LivePlan:
    """What to deploy. ``artifacts`` are model.tar.gz files, uploaded as
    ``s3://bucket/prefix/<file name>``: the TargetModel names a client then sends."""

    artifacts: list[Path]
    bucket: str
    instance_type: str
    role_arn: str
    prefix: str = "mmesim"
    instance_count: int = 1
    region: str = "us-east-1"
    image: str | None = None                  # default: SageMaker's Triton image for the region
    name: str | None = None                   # base name of model/config/endpoint (default mmesim-<time>)
    environment: dict[str, str] = field(default_factory=dict)
    sagemaker_endpoint_url: str | None = None  # rehearsal: the emulator's control plane or moto
    s3_endpoint_url: str | None = None
    cloudwatch_endpoint_url: str | None = None
    runtime_endpoint_url: str | None = None

    def check(self) -> None:
        """The names AWS would refuse, and a missing login, before anything is created: the
        S3 bucket rules, an IAM role ARN, a region code, http(s) endpoint URLs, an instance
        type of the catalogue, a count >= 1."""
        from urllib.parse import urlsplit

        from mmesim.catalog import load_catalog
        load_catalog().instance(self.instance_type)
        if self.instance_count < 1:
            raise ConfigError("must be at least 1", field="--instance-count", value=self.instance_count)
        if not (re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket) and ".." not in self.bucket):
            raise ConfigError("an S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens",
                              field="--bucket", value=self.bucket)
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", self.role_arn):
            raise ConfigError("an IAM role ARN: arn:aws:iam::ACCOUNT:role/NAME", field="--role", value=self.role_arn)
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", self.region):
            raise ConfigError("a region code such as us-east-1", field="--region", value=self.region)
        for service in ("sagemaker", "s3", "cloudwatch", "runtime"):
            url = getattr(self, f"{service}_endpoint_url")
            if url is not None and not (urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc):
                raise ConfigError("expected http(s)://HOST[:PORT]", field=f"--{service}-endpoint-url", value=url)

    @classmethod
    def from_models_dir(cls, models: str | Path, **kw) -> "LivePlan":
        folder = Path(models)
        if not folder.is_dir():
            raise ConfigError("is not a directory of model.tar.gz files", field="--models", value=str(folder))
        artifacts = sorted(folder.glob("*.tar.gz"))
        if not artifacts:
            raise ConfigError("holds no *.tar.gz artifacts (mmesim package writes them)", field="--models",
                              value=str(folder))
        return cls(artifacts=artifacts, **kw)


@dataclass(frozen=True)
class Estimate:
    instance_type: str
    instance_count: int
    price_usd_per_hour: float
    price_verified: bool
    hours: float
    usd: float

    def describe(self) -> str:
        note = "" if self.price_verified else " (price not verified: check the SageMaker pricing page)"
        return (f"estimated cost: {self.instance_count} x {self.instance_type} at ${self.price_usd_per_hour:.3f}/h"
                f"{note} for {self.hours * 60:.0f} min (setup ~{SETUP_S // 60} min + load test + teardown "
                f"~{TEARDOWN_S // 60} min) = ${self.usd:.2f}, plus S3 storage and CloudWatch GetMetricData "
                f"($0.01 per 1,000 metrics) requests; on-demand us-east-1 price, other regions differ")


def estimate_cost(instance_type: str, instance_count: int = 1, run_s: float = 0.0) -> Estimate:
    """What one live run costs in instance time: setup, the load test, teardown."""
    from mmesim.catalog import load_catalog
    it = load_catalog().instance(instance_type)
    hours = (SETUP_S + max(run_s, 0.0) + TEARDOWN_S) / 3600
    return Estimate(it.name, instance_count, it.price_usd_per_hour, it.price_verified, hours,
                    hours * it.price_usd_per_hour * instance_count)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Deployment:
    """The state file of one live run and boto3 clients for what it names."""

    def __init__(self, path: str | Path, state: dict):
        self.path, self.state = Path(path), state
        self._clients: dict[str, object] = {}

    # -- the state file -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Deployment":
        path = Path(path)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("no such state file", field="--state", value=str(path)) from None
        except ValueError as exc:
            raise ConfigError(f"not a live state file: {exc}", source=str(path)) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ConfigError(f"not a version {STATE_VERSION} live state file", source=str(path))
        return cls(path, state)

    def save(self) -> None:
        """Write the state atomically: a crash leaves the old or the new file, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as fh:
            json.dump(self.state, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def note(self, key: str, value) -> None:
        self.state[key] = value
        self.save()

    @property
    def endpoint_name(self) -> str | None:
        return self.state.get("endpoint")

    @property
    def left(self) -> list[str]:
        """What may still exist, as printable names."""
        s = self.state
        out = [f"endpoint {s['endpoint']}"] if s.get("endpoint") else []
        out += [f"endpoint config {s['endpoint_config']}"] if s.get("endpoint_config") else []
        out += [f"model {s['model']}"] if s.get("model") else []
        out += [f"s3://{s['bucket']}/{k}" for k in s.get("objects", [])]
        out += [f"bucket {s['bucket']}"] if s.get("created_bucket") else []
        return out

    # -- clients --------------------------------------------------------------------------
    def client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config
            url = self.state.get("endpoint_urls", {}).get(service)
            self._clients[service] = boto3.session.Session().client(
                service, region_name=self.state["region"], endpoint_url=url,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._clients[service]


# --- deploy ---------------------------------------------------------------------------------
def deploy(plan: LivePlan, state_path: str | Path, *, yes_spend: bool,
           progress: Callable[[str], None] = print, wait: bool = True, timeout_s: float = 3600,
           poll_s: float = 15.0) -> Deployment:
    """Upload the artifacts, create model, endpoint config and endpoint, wait for InService.

    If anything fails or the user interrupts (Ctrl-C), everything created so far is deleted
    before the error goes on."""
    plan.check()
    if not yes_spend:
        raise SpendNotConfirmed("live mode creates billed AWS resources: read the estimate and add --yes-spend")
    for artifact in plan.artifacts:
        if not Path(artifact).is_file():
            raise ConfigError("no such artifact file", field="--models", value=str(artifact))
    state_path = Path(state_path)
    if state_path.is_dir():
        raise ConfigError("is a folder; name a file", field="--state", value=str(state_path))
    import boto3
    if boto3.session.Session().get_credentials() is None:
        raise MissingPiece("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                           "or run `aws configure`")
    if state_path.exists() and not Deployment.load(state_path).state.get("deleted"):
        raise ConfigError("holds a deployment not torn down yet: run `mmesim live teardown --state "
                          f"{state_path}` first, or choose another --state", field="--state", value=str(state_path))
    from mmesim.live.images import triton_image_uri
    name = plan.name or "mmesim-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    prefix = plan.prefix.strip("/")
    dep = Deployment(state_path, {
        "version": STATE_VERSION, "name": name, "region": plan.region, "created_at": _now(),
        "endpoint_urls": {"sagemaker": plan.sagemaker_endpoint_url, "s3": plan.s3_endpoint_url,
                          "cloudwatch": plan.cloudwatch_endpoint_url, "sagemaker-runtime": plan.runtime_endpoint_url},
        "bucket": plan.bucket, "prefix": prefix, "created_bucket": False, "objects": [],
        "model": None, "endpoint_config": None, "endpoint": None, "variant": "AllTraffic",
        "instance_type": plan.instance_type, "instance_count": plan.instance_count, "deleted": False})
    dep.save()
    try:
        _upload(dep, plan, prefix, progress)
        image = plan.image or triton_image_uri(plan.region)
        sm = dep.client("sagemaker")
        dep.note("model", f"{name}-model")
        progress(f"creating model {name}-model ({image})")
        sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=plan.role_arn, PrimaryContainer={
            "Image": image, "Mode": "MultiModel", "ModelDataUrl": f"s3://{plan.bucket}/{prefix}/" if prefix
            else f"s3://{plan.bucket}/", "Environment": dict(plan.environment)})
        dep.note("endpoint_config", f"{name}-config")
        sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": f"{name}-model", "InstanceType": plan.instance_type,
            "InitialInstanceCount": plan.instance_count, "InitialVariantWeight": 1.0}])
        dep.note("endpoint", name)
        progress(f"creating endpoint {name} on {plan.instance_count} x {plan.instance_type}")
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
        if wait:
            wait_in_service(dep, timeout_s=timeout_s, poll_s=poll_s, progress=progress)
    except BaseException as exc:
        progress(f"deploy stopped ({type(exc).__name__}: {exc}); deleting what it created")
        teardown(dep, progress=progress, poll_s=poll_s)
        raise
    return dep


def _upload(dep: Deployment, plan: LivePlan, prefix: str, progress) -> None:
    s3 = dep.client("s3")
    errors = _client_errors()
    try:
        s3.head_bucket(Bucket=plan.bucket)
    except errors as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise LiveError(f"cannot use bucket {plan.bucket}: {exc}") from None
        dep.note("created_bucket", True)
        progress(f"creating bucket {plan.bucket}")
        kw = {} if plan.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": plan.region}}
        s3.create_bucket(Bucket=plan.bucket, **kw)
    for artifact in plan.artifacts:
        key = f"{prefix}/{Path(artifact).name}" if prefix else Path(artifact).name
        dep.note("objects", dep.state["objects"] + [key])
        progress(f"uploading {artifact} to s3://{plan.bucket}/{key}")
        s3.upload_file(str(artifact), plan.bucket, key)


def wait_in_service(dep: Deployment, *, timeout_s: float = 3600, poll_s: float = 15.0,
                    progress: Callable[[str], None] = print) -> None:
    """Poll DescribeEndpoint until InService; LiveError on Failed or after ``timeout_s``."""
    sm, name = dep.client("sagemaker"), dep.endpoint_name
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        d = sm.describe_endpoint(EndpointName=name)
        status = d["EndpointStatus"]
        if status != last:
            progress(f"endpoint {name}: {status}")
            last = status
        if status == "InService":
            dep.note("in_service_at", _now())
            return
        if status not in ("Creating", "Updating", "SystemUpdating"):
            raise LiveError(f"endpoint {name} is {status}: {d.get('FailureReason', 'no reason given')}")
        if time.monotonic() > deadline:
            raise LiveError(f"endpoint {name} not InService after {timeout_s:g} s (still {status})")
        time.sleep(poll_s)


# --- teardown -------------------------------------------------------------------------------
def teardown(dep: Deployment | str | Path, *, progress: Callable[[str], None] = print,
             poll_s: float = 15.0, timeout_s: float = 3600) -> Deployment:
    """Delete what the state file names (endpoint, config, model, uploaded objects, a bucket it
    created), newest first; "not found" counts as deleted. Each deletion is written to the
    state file, so an interrupted teardown can simply be run again."""
    if not isinstance(dep, Deployment):
        dep = Deployment.load(dep)
    s, errors, failures = dep.state, _client_errors(), []
    sm = dep.client("sagemaker")
    steps = [("endpoint", lambda n: sm.delete_endpoint(EndpointName=n)),
             ("endpoint_config", lambda n: sm.delete_endpoint_config(EndpointConfigName=n)),
             ("model", lambda n: sm.delete_model(ModelName=n))]
    for key, delete in steps:
        if not s.get(key):
            continue
        try:
            if key == "endpoint":
                _wait_settled(dep, s[key], poll_s, timeout_s, progress)
            progress(f"deleting {key.replace('_', ' ')} {s[key]}")
            delete(s[key])
            if key == "endpoint":
                _wait_gone(dep, s[key], poll_s, timeout_s)
        except errors as exc:
            if not _not_found(exc):
                failures.append(f"{key} {s[key]}: {exc}")
                continue
        except LiveError as exc:
            failures.append(str(exc))
            continue
        dep.note(key, None)
    if s.get("objects") or s.get("created_bucket"):
        s3 = dep.client("s3")
        try:
            keys = list(s.get("objects", []))
            for i in range(0, len(keys), 1000):
                chunk = keys[i:i + 1000]
                progress(f"deleting {len(chunk)} object(s) under s3://{s['bucket']}/{s.get('prefix', '')}")
                out = s3.delete_objects(Bucket=s["bucket"], Delete={"Objects": [{"Key": k} for k in chunk],
                                                                    "Quiet": True})
                bad = {e["Key"] for e in out.get("Errors", []) if e.get("Code") != "NoSuchKey"}
                dep.note("objects", [k for k in dep.state["objects"] if k not in set(chunk) - bad])
                failures += [f"s3://{s['bucket']}/{k}: not deleted" for k in sorted(bad)]
        except errors as exc:
            if _code(exc) != "NoSuchBucket":
                failures.append(f"objects in s3://{s['bucket']}: {exc}")
            else:
                dep.note("objects", [])
        if s.get("created_bucket") and not s.get("objects"):
            progress(f"deleting bucket {s['bucket']}")
            try:
                s3.delete_bucket(Bucket=s["bucket"])
                dep.note("created_bucket", False)
            except errors as exc:
                if _code(exc) == "NoSuchBucket":
                    dep.note("created_bucket", False)
                else:
                    failures.append(f"bucket {s['bucket']} (it may hold objects of others): {exc}")
    if failures:
        raise LiveError(f"teardown left {len(failures)} resource(s); state kept in {dep.path}: " + "; ".join(failures))
    dep.state["deleted"], dep.state["deleted_at"] = True, _now()
    dep.save()
    progress(f"deleted everything {dep.state['name']} created (state: {dep.path})")
    return dep


BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")


def _wait_settled(dep: Deployment, name: str, poll_s: float, timeout_s: float, progress) -> None:
    """SageMaker refuses to delete an endpoint while it is Creating or Updating: wait that out."""
    sm, told = dep.client("sagemaker"), False
    deadline = time.monotonic() + timeout_s
    while (status := sm.describe_endpoint(EndpointName=name)["EndpointStatus"]) in BUSY:
        if not told:
            progress(f"endpoint {name} is {status}; SageMaker deletes it only after that ends: waiting "
                     f"(interrupting leaves it to `mmesim live teardown --state {dep.path}`)")
            told = True
        if time.monotonic() > deadline:
            raise LiveError(f"endpoint {name} still {status} after {timeout_s:g} s; delete it later")
        time.sleep(poll_s)


def _wait_gone(dep: Deployment, name: str, poll_s: float, timeout_s: float) -> None:
    sm, errors = dep.client("sagemaker"), _client_errors()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
        except errors as exc:
            if _not_found(exc):
                return
            raise
        if time.monotonic() > deadline:
            raise LiveError(f"endpoint {name} is still {status} {timeout_s:g} s after DeleteEndpoint")
        time.sleep(poll_s)


def _client_errors():
    from botocore.exceptions import ClientError
    return (ClientError,)


def _code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _not_found(exc) -> bool:
    code, message = _code(exc), str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return code in ("ResourceNotFound", "404", "NoSuchKey", "NoSuchBucket") or \
        (code == "ValidationException" and ("Could not find" in message or "does not exist" in message))
