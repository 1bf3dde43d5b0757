"""Working memory and leaks on the emulator's virtual backend, through boto3 against a real
`mmesim emulate --backend virtual` process: an execution whose working memory is not free
fails as the simulator decides it (the same Workspace), relayed as SageMaker relays Triton's
CUDA out-of-memory error, counted by cause; bytes leaked by unloads stay used."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import MiB, make_profile
from emulator_process import emulate, fake_artifacts, runtime
from mmesim.endpoint import EndpointConfig
from mmesim.results.records import EXECUTION_OOM, OK
from mmesim.sim import Simulation
from mmesim.workload import Workload

pytest.importorskip("aiohttp")

T4 = "ml.g4dn.xlarge"       # 15109 MiB NVML total
BODY = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}).encode()


def save(profile, folder) -> str:
    path = folder / f"{profile.name}.json"
    profile.save(path)
    return str(path)


def metrics(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics.json") as r:
        return json.loads(r.read())["endpoints"][0]["instances"][0]


def invoke(client, target: str):
    return client.invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json",
                                  Body=BODY)["Body"].read()


def test_execution_out_of_memory_is_a_model_error_counted_by_cause(tmp_path):
    # 1000 MiB baseline + two 500 MiB copies leave 13109 MiB of the T4 free: "hungry" needs
    # 14000 MiB per execution (never fits), "frugal" 100 MiB (always fits)
    hungry = make_profile("hungry", mem_mib=500, load_s=0.1, s1=0.005, max_batch=1,
                          working_memory=[{"batch": 1, "bytes": 14000 * MiB}])
    frugal = make_profile("frugal", mem_mib=500, load_s=0.1, s1=0.005, max_batch=1,
                          working_memory=[{"batch": 1, "bytes": 100 * MiB}])
    models = fake_artifacts(tmp_path / "models", ["hungry-v0.tar.gz", "frugal-v0.tar.gz"])
    out = tmp_path / "out"
    with emulate("--instance", T4, "--models", str(models), "--backend", "virtual",
                 "--profile", save(hungry, tmp_path), "--profile", save(frugal, tmp_path), out=out) as (url, proc):
        client = runtime(url)
        for _ in range(3):
            with pytest.raises(client.exceptions.ModelError) as info:
                invoke(client, "hungry-v0.tar.gz")
            err = info.value.response
            assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
            assert err["OriginalStatusCode"] == 500              # Triton's answer to the backend's error
            assert "out of memory" in err["OriginalMessage"] and "14000 MiB" in err["OriginalMessage"]
            assert "Received server error (500) from primary" in err["Error"]["Message"]
        assert json.loads(invoke(client, "frugal-v0.tar.gz"))["outputs"]
        m = metrics(url)
        assert m["LoadedModelCount"] == 2                         # the failing model stays loaded
        assert m["FailuresByCause"] == {EXECUTION_OOM: 3}
        assert m["Invocation4XXErrors"] == 3 and m["Invocation5XXErrors"] == 0
        with urllib.request.urlopen(url + "/metrics") as r:
            text = r.read().decode()
        assert f'Cause="{EXECUTION_OOM}"}} 3' in text
    assert proc.returncode == 0, proc.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 4 and summary["failures_by_cause"] == {EXECUTION_OOM: 3}
    rows = [r.split(",") for r in (out / "requests.csv").read_text().splitlines()[1:]]
    assert sorted(r[2] for r in rows if EXECUTION_OOM in r) == ["hungry-v0.tar.gz"] * 3


def test_leaked_bytes_stay_used_and_crowd_copies_out(tmp_path):
    # 3000 MiB copies over a 1000 MiB baseline, budget 0.9 x 15109 MiB: four fit; each unload
    # leaves 700 MiB used, so loading eight models in turn unloads some and leaves the leak
    leak = 700 * MiB
    p = make_profile("leaky", mem_mib=3000, load_s=0.1, unload_s=0.05, s1=0.002, max_batch=1,
                     leak_bytes_per_unload=leak)
    names = [f"leaky-v{i}.tar.gz" for i in range(8)]
    models = fake_artifacts(tmp_path / "models", names)
    with emulate("--instance", T4, "--models", str(models), "--backend", "virtual",
                 "--profile", save(p, tmp_path)) as (url, _):
        client = runtime(url)
        for name in names:
            invoke(client, name)
        deadline = time.monotonic() + 10
        while True:     # memory is sampled off the request path: wait for the last sample
            m = metrics(url)
            unloads = m["ModelUnloadingTime"]["SampleCount"]
            resident = p.baseline_gpu_bytes + m["LoadedModelCount"] * p.gpu_memory_bytes
            if m["GPUMemoryUsedBytes"] == resident + unloads * leak or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert unloads >= 4
    # what NVML would report: baseline + copies loaded + every unload's leak, as the simulator keeps it
    assert m["GPUMemoryUsedBytes"] == resident + unloads * leak
    assert m["GPUMemoryUtilization"] == pytest.approx(100 * m["GPUMemoryUsedBytes"] / m["GPUMemoryTotalBytes"])
    assert m["CommittedBytes"] == m["GPUMemoryUsedBytes"]     # the platform's budget counts the leak too
    assert m["LoadedModelCount"] < 4                           # the leak took the room of at least one copy


# -- the same scenario through the simulator and the emulator ---------------------------------
RATE, SERVICE_S, SECONDS = 8.0, 0.05, 25.0


def contended_profile():
    """Two execution instances, but memory for one execution at a time: 1000 MiB baseline +
    500 MiB copy leave 13609 MiB; each execution needs 8000. An arrival that finds an
    execution running fails: a loss system, whose share lost is rho / (1 + rho) (Erlang B with
    one server, whatever the service time's distribution), rho = rate x service time."""
    p = make_profile("contended", mem_mib=500, load_s=0.1, s1=SERVICE_S, max_batch=1,
                     working_memory=[{"batch": 1, "bytes": 8000 * MiB}])
    return p.model_copy(update={"triton": p.triton.model_copy(update={"instance_count": 2})})


def arrivals(seed: int = 3) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    while True:
        t += rng.expovariate(RATE)
        if t >= SECONDS:
            return out
        out.append(t)


@pytest.mark.alone         # an open-loop trace on the wall clock: a starved emulator queues differently
def test_out_of_memory_share_matches_between_the_simulator_and_the_emulator(tmp_path):
    p, times = contended_profile(), arrivals()
    expected = RATE * SERVICE_S / (1 + RATE * SERVICE_S)           # 2/7 of arrivals find one running

    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,model\n" + "".join(f"{t:.4f},{p.name}-v0\n" for t in times))
    run = Simulation([p], EndpointConfig(instance_type=T4, overhead_s=0), Workload(kind="trace", trace=str(trace)),
                     [1], seed=1).run(SECONDS + 5)
    simulated = [r.outcome for r in run.records]

    models = fake_artifacts(tmp_path / "models", [f"{p.name}-v0.tar.gz"])
    emulated, lock = [], threading.Lock()
    with emulate("--instance", T4, "--models", str(models), "--backend", "virtual",
                 "--profile", save(p, tmp_path)) as (url, _):
        client = runtime(url, pool=32)
        invoke(client, f"{p.name}-v0.tar.gz")            # loaded before the trace, as the simulator preloads

        def one():
            try:
                invoke(client, f"{p.name}-v0.tar.gz")
                outcome = OK
            except client.exceptions.ModelError as exc:
                outcome = EXECUTION_OOM if "out of memory" in exc.response["OriginalMessage"] else "ModelError"
            with lock:
                emulated.append(outcome)

        with ThreadPoolExecutor(32) as pool:      # open loop: each request leaves at its trace time
            t0 = time.monotonic()
            for t in times:
                time.sleep(max(0.0, t0 + t - time.monotonic()))
                pool.submit(one)

    for outcomes in (simulated, emulated):
        assert len(outcomes) == len(times) and set(outcomes) <= {OK, EXECUTION_OOM}
    share = {k: v.count(EXECUTION_OOM) / len(v) for k, v in (("sim", simulated), ("emu", emulated))}
    # ~200 arrivals: the share's standard error is about 0.03
    assert share["sim"] == pytest.approx(expected, abs=0.1)
    assert share["emu"] == pytest.approx(expected, abs=0.12)
    assert abs(share["sim"] - share["emu"]) < 0.12, share


def test_a_restarted_server_forgets_the_leak(tmp_path):
    """The platform restarts a crashed backend (Instance.restart): the new process has leaked
    nothing, in the backend's memory and in the platform's committed bytes alike."""
    import asyncio

    from mmesim.emulator.backends import VirtualBackend
    from mmesim.sim.residency import Residency, Resident
    p = make_profile("leaky", mem_mib=3000, load_s=0.1, unload_s=0.01, leak_bytes_per_unload=700 * MiB)

    async def main():
        b = VirtualBackend(15109 * MiB, p.baseline_gpu_bytes, instance=T4)
        await b.start()
        await b.load("a", tmp_path, p)
        await b.unload("a")
        leaked = b.memory_used()
        await b.stop()
        await b.start()
        await b.stop()
        return leaked, b.memory_used()

    leaked, restarted = asyncio.run(main())
    assert (leaked, restarted) == (p.baseline_gpu_bytes + 700 * MiB, p.baseline_gpu_bytes)
    models, r = Residency(10_000 * MiB, p.baseline_gpu_bytes, 4), Resident("a")
    assert models.preload(r, p.gpu_memory_bytes)
    models.evict(r)
    models.unloaded(r, 700 * MiB)
    assert models.committed == p.baseline_gpu_bytes + 700 * MiB
    models.reset(p.baseline_gpu_bytes)
    assert models.committed == p.baseline_gpu_bytes


def test_locust_counts_the_out_of_memory_cause_with_either_client(tmp_path):
    """`mmesim loadtest`/`validate` against an endpoint: Locust's records name the cause from
    the ModelError's message, boto3's client and the light client alike."""
    from mmesim.loadtest import run_loadtest
    hungry = make_profile("tiny-mlp", mem_mib=500, load_s=0.1, s1=0.002, max_batch=1,
                          working_memory=[{"batch": 1, "bytes": 14000 * MiB}])
    models = fake_artifacts(tmp_path / "models", ["tiny-mlp-v0"])
    wl = Workload(kind="users", stages=[{"end_s": 3, "users": 1, "spawn_rate": 10}], wait_s=(0.02, 0.05))
    with emulate("--instance", T4, "--models", str(models), "--backend", "virtual",
                 "--profile", save(hungry, tmp_path)) as (url, _):
        for client in ("http", "fast"):
            run = run_loadtest(url, "mmesim", wl, [hungry], [1], tmp_path / client, protocol="sagemaker", client=client)
            assert len(run.records) > 10 and {r.outcome for r in run.records} == {EXECUTION_OOM}, client
