"""`mmesim emulate --backend triton`: a real tritonserver in SageMaker mode behind the
emulator, driven through boto3; the server is killed mid-test and comes back."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("aiohttp")
psutil = pytest.importorskip("psutil")

from conftest import make_profile  # noqa: E402
from emulator_process import emulate, kill_under_load, runtime  # noqa: E402
from mmesim.emulator.platform import container_name  # noqa: E402
from mmesim.triton.packaging import package_copies  # noqa: E402
from mmesim.triton.zoo import builtin  # noqa: E402

pytestmark = pytest.mark.triton

MLP, CNN = builtin("tiny-mlp")[0], builtin("tiny-cnn")[0]


def body(spec, request_id: str) -> bytes:
    return json.dumps({"id": request_id, **json.loads(spec.request_body(1))}).encode()


def call(client, target: str):
    spec = CNN if target.startswith("tiny-cnn") else MLP
    rid = uuid.uuid4().hex
    r = client.invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json",
                               Body=body(spec, rid))
    answer = json.loads(r["Body"].read())
    assert answer["id"] == rid and answer["model_name"] == container_name(target), answer
    assert answer["outputs"][0]["shape"] == [1, 10]
    return answer


def metrics(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics.json") as r:
        return json.loads(r.read())["endpoints"][0]["instances"][0]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """Three artifacts; profiles give each 1.4 GiB against a 4 GiB budget (3.6 GiB at 0.9):
    two fit beside the server's own memory, three do not."""
    root = tmp_path_factory.mktemp("emulate-triton")
    models = root / "models"
    package_copies("tiny-mlp", "python", models, 2, cpu_threads=1)
    package_copies("tiny-cnn", "python", models, 1, cpu_threads=1)
    profiles = []
    for name in ("tiny-mlp", "tiny-cnn"):
        path = root / f"{name}.json"
        make_profile(name, mem_mib=1434, gpu="cpu").save(path)
        profiles += ["--profile", str(path)]
    with emulate("--instance", "ml.g4dn.xlarge", "--backend", "triton", "--models", str(models),
                 "--memory-budget", "4GiB", *profiles, out=root / "out") as (url, proc):
        server = psutil.Process(proc.pid)
        yield url, server
        started = [p for p in server.children(recursive=True)]
    assert proc.returncode == 0, proc.output
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"left running: {alive}"


def test_heterogeneous_models_answer_through_boto3(endpoint):
    url, _ = endpoint
    client = runtime(url)
    with ThreadPoolExecutor(2) as pool:          # two loads at once, one per model
        list(pool.map(lambda target: call(client, target), ["tiny-mlp-v0.tar.gz", "tiny-cnn-v0.tar.gz"]))
    call(client, "tiny-mlp-v0.tar.gz")           # cnn-v0 is now the least recently used... until the churn test
    m = metrics(url)
    assert m["LoadedModelCount"] == 2 and m["ModelLoadingTime"]["SampleCount"] == 2


def test_concurrent_clients_get_their_own_answers(endpoint):
    url, _ = endpoint
    client = runtime(url, pool=32)
    end = time.monotonic() + 10
    answered, failures = [], []

    def user(k):
        while time.monotonic() < end:
            try:
                call(client, ("tiny-mlp-v0.tar.gz", "tiny-cnn-v0.tar.gz")[k % 2])
                answered.append(k)
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)

    cpu_before = metrics(url)["CPUBusySeconds"]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(user, range(32)))
    assert not failures, failures[:3]
    assert len(answered) > 32
    # CPUUtilization's source: Triton and its model processes worked for the answers (on 2
    # cores, at most 2 CPU-seconds a second of the 10; well above nothing)
    used = metrics(url)["CPUBusySeconds"] - cpu_before
    assert 0.05 * len(answered) * 1e-3 < used < 2 * 12


def test_a_third_model_unloads_the_least_recently_used(endpoint):
    url, _ = endpoint
    client = runtime(url)
    call(client, "tiny-cnn-v0.tar.gz")              # mlp-v0 is now the least recently used
    before = metrics(url)
    call(client, "tiny-mlp-v1.tar.gz")              # does not fit: unloads mlp-v0
    call(client, "tiny-cnn-v0.tar.gz")              # still loaded: no load
    m = metrics(url)
    assert m["ModelUnloadingTime"]["SampleCount"] == before["ModelUnloadingTime"]["SampleCount"] + 1
    assert m["ModelLoadingTime"]["SampleCount"] == before["ModelLoadingTime"]["SampleCount"] + 1
    assert m["LoadedModelCount"] == 2 and m["CommittedBytes"] <= m["MemoryBudgetBytes"]
    assert m["Invocation5XXErrors"] == 0 and m["Invocation4XXErrors"] == 0


def test_killed_server_fails_in_flight_requests_by_name_then_serves_again(endpoint):
    url, emulator = endpoint
    client = runtime(url, pool=8)
    triton = [p for p in emulator.children(recursive=True) if p.name() == "tritonserver"]
    assert len(triton) == 1
    errors = []

    def failed(exc):
        named = (client.exceptions.InternalFailure, client.exceptions.ServiceUnavailable,
                 client.exceptions.ModelNotReadyException)
        errors.append((type(exc).__name__ if isinstance(exc, named) else f"unnamed {type(exc).__name__}", exc))
    killed_at, ok = kill_under_load(triton[0].kill, lambda: call(client, "tiny-cnn-v0.tar.gz"), failed, users=4)
    assert errors, "killing the server failed no request"
    assert {name for name, _ in errors} <= {"InternalFailure", "ServiceUnavailable"}, errors[:3]
    assert ok and ok[-1] > killed_at + 1, "the emulator did not serve again after the restart"
    m = metrics(url)
    assert m["BackendRestarts"] == 1
    new = [p for p in emulator.children(recursive=True) if p.name() == "tritonserver"]
    assert len(new) == 1 and new[0].pid != triton[0].pid
