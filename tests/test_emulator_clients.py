"""`mmesim emulate` as boto3 code written for real SageMaker sees it: what botocore reads off
each answer (RequestId, InvokedProductionVariant, the error class and message) for the
request headers and operations a multi-model endpoint refuses, and a client that goes away."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import boto3
import pytest
from botocore.config import Config

from conftest import make_profile
from emulator_process import emulate, fake_artifacts, runtime

pytest.importorskip("aiohttp")

TARGET = "tiny-v0.tar.gz"


def body(request_id: str = "r") -> bytes:
    return json.dumps({"id": request_id, "inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32",
                                                     "data": [0.5] * 4}]}).encode()


def metrics(url: str, name: str = "mmesim") -> dict:
    with urllib.request.urlopen(url + "/metrics.json") as r:
        return next(e for e in json.loads(r.read())["endpoints"] if e["EndpointName"] == name)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    models = fake_artifacts(tmp / "models", [TARGET, "tiny (copy).tar.gz"])
    profile = tmp / "tiny.json"
    make_profile("tiny", load_s=0.2, s1=0.002).save(profile)
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", str(profile)) as (url, proc):
        yield url, models, proc


def refused(call) -> tuple[str, int, str]:
    """(exception class name, HTTP status, message) botocore raised for ``call``."""
    with pytest.raises(Exception) as info:
        call()
    response = info.value.response
    return type(info.value).__name__, response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def test_every_answer_carries_a_request_id(served):
    url, _, _ = served
    client = runtime(url)
    ok = client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json", Body=body())
    with pytest.raises(client.exceptions.ValidationError) as err:
        client.invoke_endpoint(EndpointName="absent", TargetModel=TARGET, Body=body())
    ids = [ok["ResponseMetadata"]["RequestId"], err.value.response["ResponseMetadata"]["RequestId"]]
    assert all(len(i) == 36 for i in ids) and ids[0] != ids[1]
    with pytest.raises(urllib.error.HTTPError) as no_route:       # aiohttp's own 404 carries one too
        urllib.request.urlopen(url + "/no/such/route")
    assert no_route.value.code == 404 and len(no_route.value.headers["x-amzn-RequestId"]) == 36


def test_a_model_error_names_its_log_group(served):
    url, _, _ = served
    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="any",
                          aws_secret_access_key="any", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(client.exceptions.ModelError) as err:
        client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json",
                               Body=b'{"inputs": [')
    r = err.value.response
    assert r["OriginalStatusCode"] == 400 and "JSON" in r["OriginalMessage"]
    assert r["LogStreamArn"] == "arn:aws:logs:eu-west-1:000000000000:log-group:/aws/sagemaker/Endpoints/mmesim"


def test_routing_headers_a_multi_model_endpoint_refuses(served):
    url, _, _ = served
    client = runtime(url)

    def invoke(**kw):
        return client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json",
                                      Body=body(), **kw)

    assert invoke(TargetVariant="AllTraffic")["InvokedProductionVariant"] == "AllTraffic"
    name, status, message = refused(lambda: invoke(TargetVariant="Blue"))
    assert (name, status) == ("ValidationError", 400) and "'Blue'" in message and "'AllTraffic'" in message
    name, status, message = refused(lambda: invoke(TargetContainerHostname="secondContainer"))
    assert (name, status) == ("ValidationError", 400) and "TargetContainerHostname" in message
    name, status, message = refused(lambda: invoke(InferenceComponentName="ic-1"))
    assert (name, status) == ("ValidationError", 400) and "InferenceComponentName" in message
    m = metrics(url)["instances"][0]
    assert m["Invocation4XXErrors"] >= 3 and m["Invocation5XXErrors"] == 0


def test_target_models_take_what_sagemaker_takes(served):
    """TargetModel's pattern is printable ASCII, not a space first: a name with a space and
    parentheses is served; a non-ASCII letter or a '..' segment is a ValidationError."""
    url, _, _ = served
    client = runtime(url)
    r = client.invoke_endpoint(EndpointName="mmesim", TargetModel="tiny (copy).tar.gz", ContentType="application/json",
                               Body=body("copy"))
    assert json.loads(r["Body"].read())["id"] == "copy"
    for bad in ("mod\u00e8le.tar.gz", "../tiny-v0.tar.gz"):      # (HTTP strips a leading space)
        name, status, message = refused(lambda: client.invoke_endpoint(EndpointName="mmesim", TargetModel=bad,
                                                                       Body=body()))
        assert (name, status) == ("ValidationError", 400) and "TargetModel" in message, (bad, message)


def test_values_past_the_apis_length_limits_are_validation_errors(served):
    """botocore checks no maximum; SageMaker refuses, in AWS's words, a CustomAttributes over
    1,024 characters, an InferenceId over 64, an EndpointName over 63; at the limit they pass."""
    url, _, _ = served
    client = runtime(url)

    def invoke(**kw):
        args = dict(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json", Body=body())
        return client.invoke_endpoint(**{**args, **kw})

    r = invoke(CustomAttributes="a" * 1024, InferenceId="i" * 64)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200 and "CustomAttributes" not in r   # Triton sets none
    name, status, message = refused(lambda: invoke(CustomAttributes="a" * 1025))
    assert (name, status) == ("ValidationError", 400)
    assert message.startswith("1 validation error detected: Value 'aaa") and message.endswith(
        "at 'customAttributes' failed to satisfy constraint: Member must have length less than or equal to 1024")
    name, status, message = refused(lambda: invoke(InferenceId="i" * 65, EndpointName="e" * 64))
    assert (name, status) == ("ValidationError", 400) and message.startswith("2 validation errors detected: ")
    assert "at 'endpointName'" in message and "less than or equal to 63" in message
    assert "at 'inferenceId'" in message and "less than or equal to 64" in message


def test_async_and_streaming_invocations_fail_with_validation_error(served):
    url, _, _ = served
    client = runtime(url)
    name, status, message = refused(lambda: client.invoke_endpoint_async(
        EndpointName="mmesim", InputLocation="s3://bucket/in.json", ContentType="application/json"))
    assert (name, status) == ("ValidationError", 400) and "InvokeEndpointAsync" in message
    name, status, message = refused(lambda: client.invoke_endpoint_with_response_stream(
        EndpointName="mmesim", ContentType="application/json", Body=body()))
    assert (name, status) == ("ValidationError", 400) and "InvokeEndpointWithResponseStream" in message
    name, status, message = refused(lambda: client.invoke_endpoint_with_response_stream(
        EndpointName="absent", Body=body()))
    assert (name, status, message) == ("ValidationError", 400, "Endpoint absent of account 000000000000 not found.")


def test_a_control_plane_endpoint_answers_with_its_own_variant_name(served):
    url, models, _ = served
    sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="any",
                      aws_secret_access_key="any", config=Config(retries={"max_attempts": 1}))
    sm.create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::000000000000:role/x",
                    PrimaryContainer={"Image": "triton", "Mode": "MultiModel", "ModelDataUrl": f"file://{models}"})
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
        "VariantName": "Blue", "ModelName": "m", "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="blue", EndpointConfigName="c")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="blue", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    client = runtime(url)
    r = client.invoke_endpoint(EndpointName="blue", TargetModel=TARGET, ContentType="application/json", Body=body())
    assert r["InvokedProductionVariant"] == "Blue" and metrics(url, "blue")["VariantName"] == "Blue"
    assert client.invoke_endpoint(EndpointName="blue", TargetModel=TARGET, TargetVariant="Blue", Body=body(),
                                  ContentType="application/json")["InvokedProductionVariant"] == "Blue"
    name, status, message = refused(lambda: client.invoke_endpoint(EndpointName="blue", TargetModel=TARGET,
                                                                   TargetVariant="AllTraffic", Body=body()))
    assert (name, status) == ("ValidationError", 400) and "'Blue'" in message
    sm.delete_endpoint(EndpointName="blue")


def test_a_client_gone_mid_upload_is_no_error_and_others_are_served(tmp_path):
    models = fake_artifacts(tmp_path / "models", [TARGET])
    profile = tmp_path / "tiny.json"
    make_profile("tiny", load_s=0.2, s1=0.002).save(profile)
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", str(profile)) as (url, proc):
        client = runtime(url)
        client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json", Body=body())
        address = urlparse(url)
        for _ in range(3):      # promises 1000 bytes, sends 10, hangs up
            with socket.create_connection((address.hostname, address.port)) as s:
                s.sendall(b"POST /endpoints/mmesim/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"X-Amzn-SageMaker-Target-Model: " + TARGET.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                          + body()[:10])
                time.sleep(0.1)
        time.sleep(0.5)
        rid = "after"
        answer = client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json",
                                        Body=body(rid))
        assert json.loads(answer["Body"].read())["id"] == rid
        m = metrics(url)["instances"][0]
        # the three requests never arrived: not invocations, not errors
        assert m["Invocations"] == 2 and m["Invocation5XXErrors"] == 0 and m["Invocation4XXErrors"] == 0
    assert proc.returncode == 0 and "Traceback" not in proc.output, proc.output


def test_a_request_unanswered_at_the_invocation_timeout_gets_model_error_status_0(tmp_path):
    """As SageMaker (and the simulator's InvocationTimeout): a container that has not answered
    within the invocation timeout gives the client ModelError, OriginalStatusCode 0; it goes on,
    and other models are served meanwhile."""
    models = fake_artifacts(tmp_path / "models", ["slow-v0.tar.gz", "fast-v0.tar.gz"])
    for name, s1 in (("slow", 3.0), ("fast", 0.002)):
        make_profile(name, load_s=0.1, s1=s1).save(tmp_path / f"{name}.json")
    out = tmp_path / "out"
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--invocation-timeout", "1",
                 "--profile", str(tmp_path / "slow.json"), "--profile", str(tmp_path / "fast.json"),
                 out=out) as (url, proc):
        client = runtime(url)
        t = time.monotonic()
        with pytest.raises(client.exceptions.ModelError) as err:
            client.invoke_endpoint(EndpointName="mmesim", TargetModel="slow-v0.tar.gz",
                                   ContentType="application/json", Body=body())
        waited = time.monotonic() - t
        r = err.value.response
        assert r["OriginalStatusCode"] == 0 and "timed out" in r["OriginalMessage"]
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 424 and 0.9 < waited < 2.9    # the answer: 3.1 s on
        answer = client.invoke_endpoint(EndpointName="mmesim", TargetModel="fast-v0.tar.gz",
                                        ContentType="application/json", Body=body("fast"))
        assert json.loads(answer["Body"].read())["id"] == "fast"
        m = metrics(url)["instances"][0]
        assert m["Invocation4XXErrors"] == 1 and m["Invocation5XXErrors"] == 0 and m["Invocations"] == 2
        time.sleep(2.5)            # the slow container finishes unseen; the emulator stays quiet
    assert proc.returncode == 0 and "Traceback" not in proc.output, proc.output
    rows = [row.split(",") for row in (out / "requests.csv").read_text().splitlines()]
    header = rows[0]
    outcomes = sorted(row[header.index("outcome")] for row in rows[1:])
    assert outcomes == ["InvocationTimeout", "ok"]
