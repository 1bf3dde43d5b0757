"""The control plane and SigV4 checks, driven by real boto3 against a real aiohttp server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from mmesim.emulator.auth import AuthError, sigv4_middleware, verify_sigv4
from mmesim.emulator.control import ControlPlane, EndpointSpec

FAST_WAIT = {"Delay": 0.05, "MaxAttempts": 200}


class Recorder:
    """Stub callbacks: record what the control plane asked, optionally fail or hold."""

    def __init__(self, fail: str | None = None, delay_s: float = 0.0):
        self.created: list[EndpointSpec] = []
        self.deleted: list[str] = []
        self.fail, self.delay_s = fail, delay_s
        self.hold: asyncio.Event | None = None

    async def on_create(self, spec: EndpointSpec) -> None:
        await asyncio.sleep(self.delay_s)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError(self.fail)
        self.created.append(spec)

    async def on_delete(self, name: str) -> None:
        self.deleted.append(name)


@contextmanager
def serve(control: ControlPlane | None = None, keys: dict[str, str] | None = None, runtime: bool = False):
    """An aiohttp app on a free 127.0.0.1 port in its own thread: POST / -> control.handle,
    and (runtime=True) an InvokeEndpoint route answering 'pong'. Yields (url, loop)."""
    ready, box = threading.Event(), {}

    async def invocations(request):
        await request.read()
        return web.Response(body=b"pong", content_type="application/json",
                            headers={"x-Amzn-Invoked-Production-Variant": "AllTraffic"})

    async def main():
        app = web.Application(middlewares=[sigv4_middleware(keys or {})])
        if control is not None:
            app.router.add_post("/", control.handle)
        if runtime:
            app.router.add_post("/endpoints/{name}/invocations", invocations)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        box["stop"] = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        if control is not None:
            await control.close()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}", box["loop"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


def client(url: str, service: str = "sagemaker", key: str = "anything", secret: str = "anything"):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def create_stack(sm, name="ep", url="s3://bucket/models/", instance="ml.g4dn.2xlarge", count=2):
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn="arn:aws:iam::000000000000:role/x",
                    PrimaryContainer={"Image": "785573368785.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3",
                                      "Mode": "MultiModel", "ModelDataUrl": url,
                                      "Environment": {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "resnet"}})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model", "InstanceType": instance,
        "InitialInstanceCount": count}])
    return sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


# --- the control plane -----------------------------------------------------------------------
def test_notebook_flow_create_wait_describe_list_delete():
    rec = Recorder()
    control = ControlPlane(rec.on_create, rec.on_delete, region="us-east-1", account="123456789012")
    with serve(control) as (url, _):
        sm = client(url)
        arn = create_stack(sm)["EndpointArn"]
        assert arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        d = sm.describe_endpoint(EndpointName="ep")
        assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "ep-config"
        assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        assert isinstance(d["CreationTime"], dt.datetime)
        assert rec.created == [EndpointSpec(
            name="ep", config_name="ep-config", model_name="ep-model", model_data_url="s3://bucket/models/",
            instance_type="ml.g4dn.2xlarge", instance_count=2, variant_name="AllTraffic",
            image="785573368785.dkr.ecr.us-east-1.amazonaws.com/sagemaker-tritonserver:24.09-py3",
            environment={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "resnet"})]
        assert sm.describe_model(ModelName="ep-model")["PrimaryContainer"]["Mode"] == "MultiModel"
        assert sm.describe_endpoint_config(EndpointConfigName="ep-config")["ProductionVariants"][0][
            "InstanceType"] == "ml.g4dn.2xlarge"
        assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["ep"]

        sm.delete_endpoint(EndpointName="ep")
        sm.get_waiter("endpoint_deleted").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        assert rec.deleted == ["ep"] and control.status("ep") is None
        sm.delete_endpoint_config(EndpointConfigName="ep-config")
        sm.delete_model(ModelName="ep-model")
        with pytest.raises(ClientError) as err:
            sm.describe_endpoint(EndpointName="ep")
        assert error_code(err.value) == "ValidationException"
        assert 'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"' in str(err.value)
        assert sm.list_endpoints()["Endpoints"] == [] and control.models == {} and control.configs == {}


def test_endpoint_stays_creating_until_the_callback_returns():
    rec = Recorder()
    control = ControlPlane(rec.on_create, rec.on_delete)
    with serve(control) as (url, loop):
        rec.hold = asyncio.run_coroutine_threadsafe(_event(), loop).result()
        sm = client(url)
        create_stack(sm)
        for _ in range(3):
            assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Creating"
        assert "ProductionVariants" not in sm.describe_endpoint(EndpointName="ep")
        loop.call_soon_threadsafe(rec.hold.set)
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        assert len(rec.created) == 1


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_an_endpoint_still_creating_cannot_be_deleted():
    rec = Recorder()
    control = ControlPlane(rec.on_create, rec.on_delete)
    with serve(control) as (url, loop):
        rec.hold = asyncio.run_coroutine_threadsafe(_event(), loop).result()
        sm = client(url)
        create_stack(sm)
        with pytest.raises(ClientError, match="while it is in Creating status") as err:
            sm.delete_endpoint(EndpointName="ep")
        assert error_code(err.value) == "ValidationException" and rec.deleted == []
        loop.call_soon_threadsafe(rec.hold.set)
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        sm.delete_endpoint(EndpointName="ep")
        sm.get_waiter("endpoint_deleted").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        assert rec.deleted == ["ep"]


def test_an_adopted_endpoint_is_described_listed_and_deleted_like_a_created_one():
    rec = Recorder()
    control = ControlPlane(rec.on_create, rec.on_delete)
    control.adopt(EndpointSpec(name="cli", config_name="cli", model_name="cli", model_data_url="/models",
                               instance_type="local", instance_count=1))
    with serve(control) as (url, _):
        sm = client(url)
        assert sm.describe_endpoint(EndpointName="cli")["EndpointStatus"] == "InService"
        assert sm.describe_model(ModelName="cli")["PrimaryContainer"]["ModelDataUrl"] == "/models"
        assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["cli"]
        sm.delete_endpoint(EndpointName="cli")
        sm.get_waiter("endpoint_deleted").wait(EndpointName="cli", WaiterConfig=FAST_WAIT)
        assert rec.deleted == ["cli"] and rec.created == []


def test_failed_creation_shows_failed_with_reason():
    rec = Recorder(fail="no artifact store at s3://nowhere/")
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        sm = client(url)
        create_stack(sm)
        with pytest.raises(WaiterError):
            sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)
        d = sm.describe_endpoint(EndpointName="ep")
        assert d["EndpointStatus"] == "Failed"
        assert d["FailureReason"] == "RuntimeError: no artifact store at s3://nowhere/"


@pytest.mark.parametrize("call, code, fragment", [
    (lambda sm: sm.create_model(ModelName="m", PrimaryContainer={"Image": "i", "ModelDataUrl": "s3://b/p/"}),
     "ValidationException", "Mode to 'MultiModel'"),
    (lambda sm: sm.create_model(ModelName="m", PrimaryContainer={"Image": "i", "Mode": "MultiModel"}),
     "ValidationException", "ModelDataUrl"),
    (lambda sm: sm.create_model(ModelName="bad_name!", PrimaryContainer={"Mode": "MultiModel", "ModelDataUrl": "x"}),
     "ValidationException", "'bad_name!' at 'modelName'"),
    (lambda sm: sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
        {"VariantName": "v", "ModelName": "ghost", "InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1}]),
     "ValidationException", 'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/ghost"'),
    (lambda sm: sm.create_endpoint(EndpointName="e", EndpointConfigName="ghost"),
     "ValidationException", "Could not find endpoint configuration"),
    (lambda sm: sm.delete_endpoint(EndpointName="ghost"), "ValidationException", "Could not find endpoint"),
    (lambda sm: sm.delete_model(ModelName="ghost"), "ValidationException", "Could not find model"),
    (lambda sm: sm.list_endpoints(SortBy="Size"), "ValidationException", "SortBy"),
])
def test_bad_calls_fail_alone_with_sagemakers_errors(call, code, fragment):
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        sm = client(url)
        with pytest.raises(ClientError) as err:
            call(sm)
        assert error_code(err.value) == code and fragment in str(err.value)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        create_stack(sm)                                   # the server still serves
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST_WAIT)


def test_duplicates_are_refused():
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        sm = client(url)
        create_stack(sm)
        with pytest.raises(ClientError, match='Cannot create already existing endpoint'):
            sm.create_endpoint(EndpointName="ep", EndpointConfigName="ep-config")
        with pytest.raises(ClientError, match='Cannot create already existing model'):
            sm.create_model(ModelName="ep-model", PrimaryContainer={"Mode": "MultiModel", "ModelDataUrl": "x"})


def test_list_endpoints_pages_filters_and_sorts():
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        sm = client(url)
        for name in ("alpha", "beta", "gamma"):
            create_stack(sm, name=name)
        names = [e["EndpointName"] for page in sm.get_paginator("list_endpoints").paginate(
            SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 2}) for e in page["Endpoints"]]
        assert names == ["alpha", "beta", "gamma"]
        assert [e["EndpointName"] for e in sm.list_endpoints(NameContains="mm")["Endpoints"]] == ["gamma"]
        assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["gamma", "beta", "alpha"]


def test_malformed_requests_get_json_errors():
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete)) as (url, _):
        for target, body, code in [("SageMaker.CreateModel", b"{not json", "SerializationException"),
                                   ("SageMaker.CreateTrainingJob", b"{}", "UnknownOperationException"),
                                   ("", b"{}", "UnknownOperationException"),
                                   ("SageMaker.ListEndpoints", b"[1]", "SerializationException")]:
            req = urllib.request.Request(url + "/", data=body, method="POST",
                                         headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 400 and json.loads(err.value.read())["__type"] == code


# --- SigV4 -------------------------------------------------------------------------------
KEYS = {"AKIDEMULATOR": "s3cr3t-key"}


def test_without_keys_any_credentials_pass():
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete), keys={}) as (url, _):
        assert client(url, key="whoever", secret="whatever").list_endpoints()["Endpoints"] == []


def test_with_keys_the_right_signature_passes_and_others_are_refused():
    rec = Recorder()
    with serve(ControlPlane(rec.on_create, rec.on_delete), keys=KEYS, runtime=True) as (url, _):
        assert client(url, key="AKIDEMULATOR", secret="s3cr3t-key").list_endpoints()["Endpoints"] == []
        for key, secret, code in [("AKIDEMULATOR", "wrong", "InvalidSignatureException"),
                                  ("AKIDOTHER", "s3cr3t-key", "UnrecognizedClientException")]:
            with pytest.raises(ClientError) as err:
                client(url, key=key, secret=secret).list_endpoints()
            assert error_code(err.value) == code and err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # sagemaker-runtime speaks rest-json: botocore must read the same codes there
        rt = client(url, "sagemaker-runtime", "AKIDEMULATOR", "s3cr3t-key")
        assert rt.invoke_endpoint(EndpointName="ep", Body=b'{"x": 1}', TargetModel="m.tar.gz",
                                  ContentType="application/json")["Body"].read() == b"pong"
        with pytest.raises(ClientError) as err:
            client(url, "sagemaker-runtime", "AKIDEMULATOR", "nope").invoke_endpoint(
                EndpointName="ep", Body=b"{}", ContentType="application/json")
        assert error_code(err.value) == "InvalidSignatureException"
        with pytest.raises(urllib.error.HTTPError) as unsigned:
            urllib.request.urlopen(urllib.request.Request(url + "/", data=b"{}", method="POST"), timeout=10)
        assert unsigned.value.code == 403 and json.loads(unsigned.value.read())["__type"] == \
            "MissingAuthenticationTokenException"


def _signed(body: bytes, secret: str = "s3cr3t-key", headers: dict | None = None):
    """A request signed by botocore's SigV4Auth, as boto3 signs sagemaker-runtime calls."""
    req = botocore.awsrequest.AWSRequest(method="POST", url="http://127.0.0.1:8080/endpoints/ep/invocations",
                                         data=body, headers={"Content-Type": "application/json", **(headers or {})})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials("AKIDEMULATOR", secret), "sagemaker",
                            "eu-west-1").add_auth(req)
    return req.url, {**req.headers, "Host": "127.0.0.1:8080"}         # a plain dict, as received


def test_verify_sigv4_checks_body_date_and_payload_hash():
    url, headers = _signed(b'{"a": 1}')
    assert verify_sigv4("POST", url, headers, b'{"a": 1}', KEYS) == "AKIDEMULATOR"
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_sigv4("POST", url, lowered, b'{"a": 1}', KEYS) == "AKIDEMULATOR"   # header names in any case
    with pytest.raises(AuthError, match="content-type"):
        verify_sigv4("POST", url, {k: v for k, v in headers.items() if k != "Content-Type"}, b'{"a": 1}', KEYS)
    with pytest.raises(AuthError, match="does not match the signature") as err:
        verify_sigv4("POST", url, headers, b'{"a": 2}', KEYS)                          # altered body
    assert err.value.code == "InvalidSignatureException"
    with pytest.raises(AuthError, match="does not match the signature"):
        verify_sigv4("POST", url.replace("/ep/", "/other/"), headers, b'{"a": 1}', KEYS)  # altered path
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=16)
    with pytest.raises(AuthError, match="Signature expired"):
        verify_sigv4("POST", url, headers, b'{"a": 1}', KEYS, now=later)
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=20)       # the request is 20 min ahead
    with pytest.raises(AuthError, match=r"^Signature not yet current: \d{8}T\d{6}Z is still later than "
                                        r"\d{8}T\d{6}Z \(\d{8}T\d{6}Z \+ 15 min\.\)$"):
        verify_sigv4("POST", url, headers, b'{"a": 1}', KEYS, now=earlier)
    assert verify_sigv4("POST", url, headers, b'{"a": 1}', KEYS,
                        now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=14)) == "AKIDEMULATOR"

    url, headers = _signed(b"payload", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert verify_sigv4("POST", url, headers, b"anything else", KEYS) == "AKIDEMULATOR"
    import hashlib
    url, headers = _signed(b"payload", headers={"X-Amz-Content-SHA256": hashlib.sha256(b"payload").hexdigest()})
    assert verify_sigv4("POST", url, headers, b"payload", KEYS) == "AKIDEMULATOR"
    with pytest.raises(AuthError, match="X-Amz-Content-SHA256 does not match"):
        verify_sigv4("POST", url, headers, b"tampered", KEYS)
