"""Live mode's deploy and teardown with real boto3 against a real moto server (S3, SageMaker,
CloudWatch) and against the emulator's control plane: nothing may be left behind, also when
a step is interrupted or the process dies between deploy and teardown."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto_fixture import moto_server  # noqa: F401
from test_emulator_control import Recorder, serve

from conftest import make_profile

import mmesim.live.run as live_run
from mmesim.cli import main
from mmesim.emulator.control import ControlPlane
from mmesim.errors import ConfigError
from mmesim.workload import Workload
from mmesim.live import (Deployment, LiveError, LivePlan, SpendNotConfirmed, deploy, estimate_cost, metrics,
                         run_live, teardown, triton_image_uri)

POLL = 0.05


def artifacts(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            data = f'name: "m{i}"\n'.encode()
            info = tarfile.TarInfo(f"m{i}/config.pbtxt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        (folder / f"m-v{i}.tar.gz").write_bytes(buf.getvalue())
    return folder


def plan_for(tmp_path: Path, moto: str, sagemaker_url: str | None = None, **kw) -> LivePlan:
    return LivePlan.from_models_dir(artifacts(tmp_path / "models"), bucket=f"live-{uuid.uuid4().hex[:10]}",
                                    instance_type="ml.g4dn.2xlarge", role_arn="arn:aws:iam::123456789012:role/sm",
                                    name=f"t{uuid.uuid4().hex[:8]}", sagemaker_endpoint_url=sagemaker_url or moto,
                                    s3_endpoint_url=moto, cloudwatch_endpoint_url=moto, **kw)


def aws(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


def assert_nothing_left(plan: LivePlan, moto: str, sagemaker_url: str, state: Path) -> None:
    sm, s3 = aws("sagemaker", sagemaker_url), aws("s3", moto)
    assert [e for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"].startswith(plan.name)] == []
    for call in (lambda: sm.describe_endpoint(EndpointName=plan.name),
                 lambda: sm.describe_endpoint_config(EndpointConfigName=f"{plan.name}-config"),
                 lambda: sm.describe_model(ModelName=f"{plan.name}-model")):
        with pytest.raises(ClientError, match="Could not find"):
            call()
    with pytest.raises(ClientError) as err:
        s3.head_bucket(Bucket=plan.bucket)
    assert err.value.response["Error"]["Code"] in ("404", "NoSuchBucket")
    saved = json.loads(state.read_text())
    assert saved["deleted"] is True and Deployment(state, saved).left == []


def test_deploy_then_teardown_on_moto_leaves_nothing(moto_server, tmp_path):
    plan = plan_for(tmp_path, moto_server)
    state = tmp_path / "state.json"
    dep = deploy(plan, state, yes_spend=True, poll_s=POLL, progress=lambda m: None)
    sm, s3 = aws("sagemaker", moto_server), aws("s3", moto_server)
    assert sm.describe_endpoint(EndpointName=plan.name)["EndpointStatus"] == "InService"
    container = sm.describe_model(ModelName=f"{plan.name}-model")["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"] == f"s3://{plan.bucket}/mmesim/"
    assert container["Image"] == triton_image_uri("us-east-1")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=plan.bucket)["Contents"])
    assert keys == ["mmesim/m-v0.tar.gz", "mmesim/m-v1.tar.gz"]
    saved = json.loads(state.read_text())
    assert saved["endpoint"] == plan.name and saved["created_bucket"] and saved["objects"] == keys
    assert len(dep.left) == 6
    with pytest.raises(ConfigError, match="not torn down yet"):
        deploy(plan, state, yes_spend=True, poll_s=POLL, progress=lambda m: None)
    teardown(state, poll_s=POLL, progress=lambda m: None)
    assert_nothing_left(plan, moto_server, moto_server, state)
    teardown(state, poll_s=POLL, progress=lambda m: None)               # again: nothing to do, no error


def test_an_existing_bucket_and_others_objects_are_kept(moto_server, tmp_path):
    plan = plan_for(tmp_path, moto_server)
    s3 = aws("s3", moto_server)
    s3.create_bucket(Bucket=plan.bucket)
    s3.put_object(Bucket=plan.bucket, Key="mmesim/someone-else.tar.gz", Body=b"x")
    deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=lambda m: None)
    teardown(tmp_path / "s.json", poll_s=POLL, progress=lambda m: None)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=plan.bucket)["Contents"]] == ["mmesim/someone-else.tar.gz"]


def test_no_spend_without_confirmation(moto_server, tmp_path):
    plan = plan_for(tmp_path, moto_server)
    with pytest.raises(SpendNotConfirmed):
        deploy(plan, tmp_path / "s.json", yes_spend=False)
    assert not (tmp_path / "s.json").exists()
    assert plan.bucket not in [b["Name"] for b in aws("s3", moto_server).list_buckets()["Buckets"]]
    code = main(["live", "deploy", "--models", str(tmp_path / "models"), "--bucket", plan.bucket, "--instance",
                 "ml.g4dn.2xlarge", "--role", "r", "--state", str(tmp_path / "s.json"),
                 "--s3-endpoint-url", moto_server, "--sagemaker-endpoint-url", moto_server])
    assert code == 2 and not (tmp_path / "s.json").exists()


def test_the_estimate_grows_with_run_time_and_instances():
    short, long2 = estimate_cost("ml.g4dn.2xlarge", 1, 600), estimate_cost("ml.g4dn.2xlarge", 2, 3600)
    assert short.price_usd_per_hour == 0.94 and long2.usd > 2 * short.usd
    assert "ml.g4dn.2xlarge" in short.describe() and "$" in short.describe()
    with pytest.raises(ConfigError):
        estimate_cost("ml.nope.xlarge")
    assert triton_image_uri("cn-north-1", "23.02-py3") == \
        "472730292857.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-tritonserver:23.02-py3"
    with pytest.raises(ConfigError, match="--image"):
        triton_image_uri("mars-east-1")


# --- through the emulator's control plane ------------------------------------------------------
def test_deploy_and_teardown_through_the_control_plane(moto_server, tmp_path):
    rec = Recorder()
    control = ControlPlane(rec.on_create, rec.on_delete)
    with serve(control) as (url, _):
        plan = plan_for(tmp_path, moto_server, url, instance_count=2)
        deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=lambda m: None)
        assert [(s.name, s.model_data_url, s.instance_type, s.instance_count) for s in rec.created] == \
            [(plan.name, f"s3://{plan.bucket}/mmesim/", "ml.g4dn.2xlarge", 2)]
        teardown(tmp_path / "s.json", poll_s=POLL, progress=lambda m: None)
        assert rec.deleted == [plan.name] and control.endpoints == control.configs == control.models == {}
        assert_nothing_left(plan, moto_server, url, tmp_path / "s.json")


@pytest.mark.parametrize("step", ["uploading", "creating model", "creating endpoint", ": Creating"])
def test_ctrl_c_in_any_deploy_step_deletes_what_was_created(moto_server, tmp_path, step):
    rec = Recorder(delay_s=2.0)             # the endpoint is Creating for 2 s: the first poll sees it
    control = ControlPlane(rec.on_create, rec.on_delete)
    with serve(control) as (url, loop):
        plan = plan_for(tmp_path, moto_server, url)
        said = []

        def progress(message: str) -> None:
            said.append(message)
            if step in message and not any("deploy stopped" in m for m in said):
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=progress)
        assert any("deploy stopped" in m for m in said)
        if step == ": Creating":          # SageMaker deletes a Creating endpoint only once it is up
            assert any("deletes it only after that ends" in m for m in said) and rec.deleted == [plan.name]
        else:
            assert rec.created == [] and rec.deleted == []
        assert control.endpoints == control.configs == control.models == {}
        assert_nothing_left(plan, moto_server, url, tmp_path / "s.json")


def test_a_failed_endpoint_is_torn_down_and_reported(moto_server, tmp_path):
    rec = Recorder(fail="CUDA out of memory while loading")
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        plan = plan_for(tmp_path, moto_server, url)
        with pytest.raises(LiveError, match="is Failed: RuntimeError: CUDA out of memory"):
            deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=lambda m: None)
        assert_nothing_left(plan, moto_server, url, tmp_path / "s.json")


def test_a_crashed_run_is_torn_down_later_from_its_state_file(moto_server, tmp_path):
    plan = plan_for(tmp_path, moto_server)
    deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=lambda m: None)
    # the process that deployed is gone; a new one reads only the state file
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "mmesim.cli", "live", "teardown", "--state", str(tmp_path / "s.json")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"deleted everything {plan.name} created" in done.stdout
    assert_nothing_left(plan, moto_server, moto_server, tmp_path / "s.json")


def test_run_tears_down_when_the_load_test_fails(moto_server, tmp_path, monkeypatch):
    def crashing_loadtest(*args, **kwargs):
        raise RuntimeError("load generator crashed")
    monkeypatch.setattr(live_run, "_run_loadtest", lambda: crashing_loadtest)
    plan = plan_for(tmp_path, moto_server)
    with pytest.raises(RuntimeError, match="load generator crashed"):
        run_live(plan, tmp_path / "s.json", Workload(kind="poisson", rates=[{"end_s": 5, "rate": 1}]),
                 [make_profile()], [1], tmp_path / "out", yes_spend=True, poll_s=POLL, progress=lambda m: None)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["loadtest_start"] and "loadtest_end" not in saved
    assert_nothing_left(plan, moto_server, moto_server, tmp_path / "s.json")


def test_metrics_are_read_into_cloudwatch_datapoints(moto_server, tmp_path):
    plan = plan_for(tmp_path, moto_server)
    dep = deploy(plan, tmp_path / "s.json", yes_spend=True, poll_s=POLL, progress=lambda m: None)
    try:
        cw = aws("cloudwatch", moto_server)
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=3)
        dims = [{"Name": "EndpointName", "Value": plan.name}, {"Name": "VariantName", "Value": "AllTraffic"}]
        other = [{"Name": "EndpointName", "Value": "someone-else"}, {"Name": "VariantName", "Value": "AllTraffic"}]
        when = start + dt.timedelta(seconds=30)
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Value": v, "Timestamp": when} for v in (3, 4)] + [
            {"MetricName": "ModelLatency", "Dimensions": dims, "Value": v, "Unit": "Microseconds", "Timestamp": when}
            for v in (1000, 3000)] + [
            {"MetricName": "Invocations", "Dimensions": other, "Value": 100, "Timestamp": when}])
        cw.put_metric_data(Namespace="/aws/sagemaker/Endpoints", MetricData=[
            {"MetricName": "GPUMemoryUtilization", "Dimensions": dims, "Value": 42.5, "Timestamp": when}])
        points = metrics(dep, tmp_path / "out", start=start, end=dt.datetime.now(dt.timezone.utc))
        got = {(p.metric, p.statistic): p.value for p in points}
        assert got[("Invocations", "Sum")] == 7
        assert got[("ModelLatency", "Average")] == 2000 and got[("ModelLatency", "Maximum")] == 3000
        assert got[("GPUMemoryUtilization", "Average")] == 42.5
        assert all(0 <= p.period_start_s < 240 for p in points)
        rows = (tmp_path / "out" / "cloudwatch_live.csv").read_text().splitlines()
        assert rows[0] == "metric,period_start_s,statistic,value,unit" and len(rows) == len(points) + 1
    finally:
        teardown(dep, poll_s=POLL, progress=lambda m: None)
