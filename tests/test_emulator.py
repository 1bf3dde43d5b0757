"""`mmesim emulate` on the virtual backend, through boto3, as a real process on a free port."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import make_profile
from emulator_process import emulate, fake_artifacts, runtime
from mmesim.emulator.platform import container_name
from mmesim.profile import load_profile

pytest.importorskip("aiohttp")

MiB = 2**20


def body(request_id: str, n: int = 4) -> bytes:
    return json.dumps({"id": request_id, "inputs": [{"name": "INPUT__0", "shape": [1, n], "datatype": "FP32",
                                                     "data": [0.5] * n}]}).encode()


def invoke(client, target: str, request_id: str | None = None, **kw):
    request_id = request_id or uuid.uuid4().hex
    r = client.invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json",
                               Body=kw.pop("Body", body(request_id)), **kw)
    return r, json.loads(r["Body"].read())


def metrics(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics.json") as r:
        return json.loads(r.read())["endpoints"][0]


def save(profile, folder):
    path = folder / f"{profile.name}.json"
    profile.save(path)
    return str(path)


def test_heterogeneous_models_through_boto3_and_the_request_log(tmp_path):
    models = fake_artifacts(tmp_path / "models", ["resnet50-v0.tar.gz", "resnet50-v1.tar.gz",
                                                  "bert-base-uncased-v0.tar.gz"])
    out = tmp_path / "out"
    with emulate("--instance", "ml.g4dn.2xlarge", "--models", str(models), "--backend", "virtual",
                 "--profile", "resnet50-pytorch-t4", "--profile", "bert-base-uncased-pytorch-t4", out=out) as (url, proc):
        client = runtime(url)
        seen = {}
        for target in ("resnet50-v0.tar.gz", "bert-base-uncased-v0.tar.gz", "resnet50-v1.tar.gz",
                       "resnet50-v0.tar.gz"):
            rid = uuid.uuid4().hex
            r, answer = invoke(client, target, rid)
            assert r["InvokedProductionVariant"] == "AllTraffic"
            assert answer["id"] == rid and answer["model_name"] == container_name(target)
            # the model's own output tensor, as Triton answers it: resnet50's 1000 logits, BERT's 2
            (out0,) = answer["outputs"]
            assert out0["name"] == "OUTPUT__0" and out0["datatype"] == "FP32"
            assert out0["shape"] == [1, 1000 if target.startswith("resnet50") else 2] == [1, len(out0["data"])]
            seen[target] = seen.get(target, 0) + 1
        m = metrics(url)["instances"][0]
        # memory is each profile's resident bytes (translated to the T4 it was measured on: unchanged) + baseline
        r50, bert = (load_profile(f"{n}-pytorch-t4") for n in ("resnet50", "bert-base-uncased"))
        assert m["LoadedModelCount"] == 3
        # one baseline for the server, then each loaded copy once (two resnet50s, one bert)
        assert m["CommittedBytes"] == r50.baseline_gpu_bytes + 2 * r50.gpu_memory_bytes + bert.gpu_memory_bytes
        assert m["ModelCacheHit"] == 1 and m["Invocations"] == 4
        # the warm resnet50 request took the profile's batch-1 time, not the load
        assert 0.010 < m["ModelLatency"]["Sum"] / 1e6 < 3 * 1.5
    assert proc.returncode == 0, proc.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 4 and summary["failures"] == 0 and summary["cold_starts"] == 3
    assert summary["sources"]["cold_starts"] == summary["sources"]["loads"] == "emulator log"   # it saw them
    rows = (out / "requests.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[2] for r in rows) == sorted(t for t, n in seen.items() for _ in range(n))
    assert (out / "mmesim_stats.csv").exists()


def test_bad_requests_get_their_own_error_and_others_are_unaffected(tmp_path):
    models = fake_artifacts(tmp_path / "models", ["tiny-v0.tar.gz"])
    profile = save(make_profile("tiny", load_s=0.2, s1=0.002), tmp_path)
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", profile) as (url, _):
        client = runtime(url, pool=20)
        invoke(client, "tiny-v0.tar.gz")
        stop, good, errors = threading.Event(), [], []

        def steady():
            while not stop.is_set():
                try:
                    rid = uuid.uuid4().hex
                    assert invoke(client, "tiny-v0.tar.gz", rid)[1]["id"] == rid
                    good.append(rid)
                except Exception as exc:   # noqa: BLE001 - any failure of a good request is the finding
                    errors.append(exc)

        threads = [threading.Thread(target=steady) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            def code(**kw):
                args = dict(EndpointName="mmesim", ContentType="application/json", Body=body("x"))
                args.update(kw)
                try:
                    client.invoke_endpoint(**args)
                except client.exceptions.ModelError as exc:
                    return "ModelError", exc.response["OriginalStatusCode"]
                except client.exceptions.ValidationError as exc:
                    return "ValidationError", exc.response["ResponseMetadata"]["HTTPStatusCode"]
                except Exception as exc:  # noqa: BLE001
                    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]
                return "ok", 200

            assert code(TargetModel="tiny-v0.tar.gz", Body=b'{"inputs": [') == ("ModelError", 400)
            assert code(TargetModel="tiny-v0.tar.gz", ContentType="application/x-image", Body=b"\x89PNG\r\n") == ("ModelError", 400)
            assert code(TargetModel="tiny-v0.tar.gz", Body=b"{" + b" " * 6_291_456 + b"}") == ("413", 413)
            assert code() == ("ValidationError", 400)                       # no TargetModel
            assert code(TargetModel="missing-v9.tar.gz") == ("ValidationError", 400)
            for bad in ("../x", "/etc/passwd", "%2e%2e/x"):
                assert code(TargetModel=bad) == ("ValidationError", 400)
            assert code(EndpointName="other", TargetModel="tiny-v0.tar.gz") == ("ValidationError", 400)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors and len(good) > 20
        m = metrics(url)["instances"][0]
        # eight 4XX on this endpoint (the request to "other" belongs to no endpoint's metrics)
        assert m["Invocation4XXErrors"] == 8 and m["Invocation5XXErrors"] == 0


def test_200_clients_for_60_s_each_answer_matches_its_request(tmp_path):
    names = [f"resnet50-v{i}.tar.gz" for i in range(10)]
    models = fake_artifacts(tmp_path / "models", names)
    out = tmp_path / "out"
    # the profile's overload limit (168 in flight, derived from the reference's failure point)
    # is lifted: this test is about every answer reaching its own request
    with emulate("--instance", "ml.g4dn.2xlarge", "--models", str(models), "--profile", "resnet50-pytorch-t4",
                 "--max-inflight", "1000", out=out) as (url, _):
        client = runtime(url, pool=200)
        with ThreadPoolExecutor(len(names)) as pool:  # loaded before the clock starts
            list(pool.map(lambda name: invoke(client, name), names))
        end = time.monotonic() + 60
        sent, answers, failures = [], [], []

        def user(k: int):
            i = 0
            while time.monotonic() < end:
                target, rid = names[(k + i) % len(names)], f"{k}-{i}"
                i += 1
                sent.append(rid)
                try:
                    _, answer = invoke(client, target, rid)
                    answers.append((rid, answer["id"], answer["model_name"], container_name(target)))
                except Exception as exc:  # noqa: BLE001
                    failures.append((rid, exc))

        with ThreadPoolExecutor(200) as pool:
            list(pool.map(user, range(200)))
    assert not failures, failures[:3]
    assert len(answers) == len(sent) == len(set(sent))                 # none lost, none duplicated
    assert all(rid == got and model == want for rid, got, model, want in answers)   # none misrouted
    assert len(answers) > 200 * 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == len(sent) + len(names) and summary["failures"] == 0
    assert summary["loads"] == len(names) and summary["unloads"] == 0     # each model loaded once
    # 200 clients keep the virtual T4 busy: GPUUtilization (the simulator's GPU busy share) is high
    gpu = [float(r.split(",")[3]) for r in (out / "cloudwatch.csv").read_text().splitlines()
           if r.startswith("GPUUtilization,0,Average")]
    assert gpu and 50 < gpu[0] <= 100


def test_churn_unloads_idle_models_lru_and_no_request_fails(tmp_path):
    """Eight 4 GiB models on a T4 (0.9 x 15,109 MiB = 13,598 MiB: three fit beside 1 GiB of
    baseline), two clients: every new model unloads the least recently used idle one."""
    names = [f"big-v{i}.tar.gz" for i in range(8)]
    models = fake_artifacts(tmp_path / "models", names)
    profile = save(make_profile("big", mem_mib=4096, load_s=0.3, unload_s=0.1, s1=0.005), tmp_path)
    out = tmp_path / "out"
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", profile, out=out) as (url, proc):
        client = runtime(url)
        failures, peak = [], []

        def user(k: int):
            for i in range(24):
                target = names[(k * 4 + i) % len(names)]
                try:
                    rid = uuid.uuid4().hex
                    assert invoke(client, target, rid)[1]["id"] == rid
                    peak.append(metrics(url)["instances"][0]["CommittedBytes"])
                except Exception as exc:  # noqa: BLE001
                    failures.append(exc)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(user, range(2)))
        m = metrics(url)["instances"][0]
    assert not failures, failures[:3]
    assert max(peak) <= m["MemoryBudgetBytes"] and m["LoadedModelCount"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["requests"] == 48, proc.output
    # the sequence cycles over 8 models of which 3 fit: nearly every request loads, and
    # every load beyond the first three unloads one
    assert summary["loads"] > 30 and summary["unloads"] == summary["loads"] - 3
    assert "ModelUnloadingTime" in (out / "cloudwatch.csv").read_text()


def test_a_slow_load_answers_model_not_ready_and_goes_on(tmp_path):
    models = fake_artifacts(tmp_path / "models", ["slow-v0.tar.gz"])
    profile = save(make_profile("slow", load_s=4.0, s1=0.002), tmp_path)
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", profile,
                 "--ready-timeout", "1") as (url, _):
        client = runtime(url)
        t = time.monotonic()
        with pytest.raises(client.exceptions.ModelNotReadyException):
            invoke(client, "slow-v0.tar.gz")
        assert time.monotonic() - t >= 0.9          # it waited out the 1-s ready timeout, never less
        assert metrics(url)["instances"][0]["LoadedModelCount"] == 0     # answered before the load ended
        deadline = time.monotonic() + 60            # the load goes on without anyone waiting
        while metrics(url)["instances"][0]["LoadedModelCount"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        invoke(client, "slow-v0.tar.gz")
        m = metrics(url)["instances"][0]
        # one load in all, and the second request found the model loaded
        assert m["ModelLoadingTime"]["SampleCount"] == 1 and m["ModelCacheHit"] == 1
        assert m["Invocation4XXErrors"] == 1


def test_an_instance_sheds_requests_beyond_its_inflight_limit(tmp_path):
    """A profile's max_inflight of 4 (500 ms per request, one at a time): of 10 requests at
    once, 4 are admitted and the others get ServiceUnavailable at once, as the simulator sheds
    them (a straggler arriving after a first answer may still get in)."""
    models = fake_artifacts(tmp_path / "models", ["busy-v0.tar.gz"])
    profile = save(make_profile("busy", load_s=0.1, s1=0.5, max_batch=1, max_inflight=4), tmp_path)
    with emulate("--instance", "ml.g4dn.xlarge", "--models", str(models), "--profile", profile) as (url, _):
        client = runtime(url, pool=10)
        invoke(client, "busy-v0.tar.gz")

        def one(_):
            try:
                invoke(client, "busy-v0.tar.gz")
                return "ok"
            except client.exceptions.ServiceUnavailable:
                return "ServiceUnavailable"

        with ThreadPoolExecutor(10) as pool:
            outcomes = list(pool.map(one, range(10)))
        m = metrics(url)["instances"][0]
    assert outcomes.count("ok") >= 4 and outcomes.count("ServiceUnavailable") >= 1
    assert outcomes.count("ok") + outcomes.count("ServiceUnavailable") == 10
    assert m["Invocation5XXErrors"] == outcomes.count("ServiceUnavailable")


def test_two_instances_route_to_the_instance_holding_the_model(tmp_path):
    names = [f"small-v{i}.tar.gz" for i in range(4)]
    models = fake_artifacts(tmp_path / "models", names)
    profile = save(make_profile("small", load_s=0.2, s1=0.003), tmp_path)
    out = tmp_path / "out"
    with emulate("--instance", "ml.g4dn.xlarge", "--instance-count", "2", "--models", str(models),
                 "--profile", profile, out=out) as (url, _):
        client = runtime(url)
        for _ in range(3):
            for name in names:
                invoke(client, name)
        import boto3                  # the command line's endpoint is visible to the control plane
        sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
        described = sm.describe_endpoint(EndpointName="mmesim")
        assert described["EndpointStatus"] == "InService"
        assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        loaded = [i["LoadedModelCount"] for i in metrics(url)["instances"]]
    assert loaded == [2, 2]                       # spread by least busy / least memory, loaded once each
    rows = [r.split(",") for r in (out / "requests.csv").read_text().splitlines()[1:]]
    where = {}
    for r in rows:
        where.setdefault(r[2], set()).add(r[3])
    assert all(len(v) == 1 for v in where.values()), where     # every request went where its model was


from moto_fixture import moto_server  # noqa: E402,F401  (the fixture)


def test_a_notebook_creates_an_s3_backed_endpoint_and_signatures_are_checked(tmp_path, moto_server):
    """No --models: boto3's sagemaker client creates the endpoint over artifacts in a real moto
    S3; with --auth, runtime calls signed with another secret are refused (403)."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    for path in fake_artifacts(tmp_path / "models", ["tiny-v0.tar.gz", "tiny-v1.tar.gz"]).iterdir():
        s3.upload_file(str(path), "models", f"mme/{path.name}")
    profile = save(make_profile("tiny", load_s=0.2, s1=0.002), tmp_path)
    out = tmp_path / "out"
    with emulate("--backend", "virtual", "--profile", profile, "--s3-endpoint-url", moto_server,
                 "--auth", "AKIDLOCAL:s3cret", out=out) as (url, proc):
        keys = dict(region_name="us-east-1", aws_access_key_id="AKIDLOCAL", aws_secret_access_key="s3cret")
        sm = boto3.client("sagemaker", endpoint_url=url, **keys)
        sm.create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::000000000000:role/x",
                        PrimaryContainer={"Image": "triton", "Mode": "MultiModel",
                                          "ModelDataUrl": "s3://models/mme/"})
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.g4dn.xlarge",
            "InitialInstanceCount": 1}])
        sm.create_endpoint(EndpointName="nb", EndpointConfigName="c")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="nb", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        rt = boto3.client("sagemaker-runtime", endpoint_url=url, **keys)
        for target in ("tiny-v0.tar.gz", "tiny-v1.tar.gz", "tiny-v0.tar.gz"):
            r = rt.invoke_endpoint(EndpointName="nb", TargetModel=target, ContentType="application/json",
                                   Body=body("s3"))
            assert json.loads(r["Body"].read())["id"] == "s3"
        with pytest.raises(rt.exceptions.ValidationError):            # not in the bucket
            rt.invoke_endpoint(EndpointName="nb", TargetModel="tiny-v7.tar.gz", ContentType="application/json",
                               Body=body("s3"))
        wrong = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                             aws_access_key_id="AKIDLOCAL", aws_secret_access_key="guess")
        with pytest.raises(ClientError) as refused:
            wrong.invoke_endpoint(EndpointName="nb", TargetModel="tiny-v0.tar.gz", ContentType="application/json",
                                  Body=body("s3"))
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        sm.delete_endpoint(EndpointName="nb")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sm.list_endpoints()["Endpoints"]:
            time.sleep(0.2)
        assert sm.list_endpoints()["Endpoints"] == []
    summary = json.loads((out / "nb" / "summary.json").read_text())
    # the refused signature is counted too: every refusal is in the request log
    assert summary["requests"] == 5 and summary["failures"] == 2 and summary["cold_starts"] == 3
