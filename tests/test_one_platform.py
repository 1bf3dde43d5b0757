"""One platform model: the same cold-start burst through the simulator and through the
emulator's virtual backend (a real aiohttp server, a real HTTP client) loads the same way,
because both run mmesim.sim.residency (memory, LRU, load threads) and mmesim.sim.host
(disk, vCPUs or shared cores, PCIe)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import make_profile
from emulator_process import fake_artifacts
from mmesim.endpoint import EndpointConfig
from mmesim.results.records import MODEL_NOT_READY
from mmesim.sim import Simulation
from mmesim.workload import Workload

aiohttp = pytest.importorskip("aiohttp")
pytestmark = pytest.mark.alone       # the emulator runs on the wall clock: rounds and timeouts race it

MiB = 2**20
N = 8
BUDGET = 8 * 2**30          # local: the memory budget, room for every model


def burst_profile(instance: str, load_s: float = 1.0):
    """A 100 MB artifact (downloaded from S3 in both: the emulator's virtual backend models it
    after its real fetch from a local folder), loads of ``load_s`` alone."""
    return make_profile("burst", mem_mib=200, load_s=load_s, s1=0.005, gpu="cpu" if instance == "local" else "t4")


def budget(instance: str) -> dict:
    return {"memory_budget_bytes": BUDGET} if instance == "local" else {}


def on_thread(e) -> tuple[float, float]:
    """When a load held a load thread (its call may have waited for one first)."""
    return e.time + e.thread_wait_s, e.time + e.seconds


def loads_in_flight(events) -> list[tuple[float, int]]:
    """(time, loads holding a thread just after it) at every start and end, from the first start."""
    t0 = min(on_thread(e)[0] for e in events)
    edges = sorted([(on_thread(e)[0] - t0, 1) for e in events] + [(on_thread(e)[1] - t0, -1) for e in events],
                   key=lambda x: (x[0], x[1]))
    out, n = [], 0
    for t, d in edges:
        n += d
        out.append((t, n))
    return out


def simulated(tmp_path, instance: str, ready_s: float = 60.0, load_s: float = 1.0):
    p = burst_profile(instance, load_s)
    tmp_path.mkdir(parents=True, exist_ok=True)
    trace = tmp_path / "burst.csv"
    trace.write_text("timestamp,model\n" + "".join(f"0.0,{p.name}-v{i}\n" for i in range(N)))
    endpoint = EndpointConfig(instance_type=instance, overhead_s=0, model_ready_timeout_s=ready_s, **budget(instance))
    run = Simulation([p], endpoint, Workload(kind="trace", trace=str(trace)), [N], warm=False).run(60.0)
    assert all(r.cold for r in run.records)
    statuses = [200 if r.ok else 429 if r.outcome == MODEL_NOT_READY else r.outcome for r in run.records]
    return sorted(statuses), [e for e in run.events if e.kind == "load"]


def emulated(tmp_path, instance: str, ready_s: float = 60.0, load_s: float = 1.0):
    from mmesim.emulator.emulator import Emulator, EmulatorConfig
    p = burst_profile(instance, load_s)
    models = fake_artifacts(tmp_path / "models", [f"{p.name}-v{i}.tar.gz" for i in range(N)])

    async def main():
        emulator = Emulator(EmulatorConfig(instance=instance, models=str(models), profiles=[p], port=0,
                                           **budget(instance), cache_dir=tmp_path / "cache", ready_timeout_s=ready_s))
        url = await emulator.start()
        try:
            body = b'{"inputs":[{"name":"INPUT__0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
            async with aiohttp.ClientSession() as http:
                async def invoke(i):
                    async with http.post(f"{url}/endpoints/mmesim/invocations", data=body,
                                         headers={"Content-Type": "application/json",
                                                  "X-Amzn-SageMaker-Target-Model": f"{p.name}-v{i}.tar.gz"}) as r:
                        return r.status
                statuses = await asyncio.gather(*(invoke(i) for i in range(N)))
            platform = emulator.endpoints["mmesim"].platform
            for _ in range(200):           # a load outlasting the ready timeout goes on: wait for it
                loads = [e for e in platform.events if e.kind == "load"]
                if len(loads) == N:
                    break
                await asyncio.sleep(0.05)
            return statuses, loads
        finally:
            await emulator.stop()

    statuses, loads = asyncio.run(main())
    return sorted(statuses), loads


@pytest.mark.parametrize("instance", ["ml.g4dn.xlarge", "local"])
def test_a_cold_burst_loads_alike_in_the_simulator_and_the_emulator(tmp_path, instance):
    (ok_p, predicted), (ok_m, measured) = simulated(tmp_path / "sim", instance), emulated(tmp_path / "emu", instance)
    assert ok_p == ok_m == [200] * N
    assert len(predicted) == len(measured) == N
    for loads in (predicted, measured):
        curve = loads_in_flight(loads)
        assert max(n for _, n in curve) == 4                      # four load threads, in both
        starts = sorted(on_thread(e)[0] for e in loads)
        ends = sorted(on_thread(e)[1] for e in loads)
        assert starts[3] < ends[0]                               # the first four overlap
        assert starts[4] >= ends[0] - 1e-6                       # the fifth waits for a thread: two rounds
    # the same costs: each round and the whole burst take about as long in both (real time: generous)
    def rounds(loads):         # mean time on a thread in each round, and the whole burst
        s = sorted(map(on_thread, loads))
        return [sum(b - a for a, b in s[:4]) / 4, sum(b - a for a, b in s[4:]) / 4, max(b for _, b in s) - s[0][0]]
    for p, m in zip(rounds(predicted), rounds(measured)):
        assert m == pytest.approx(p, rel=0.35)


@pytest.mark.parametrize("instance", ["ml.g4dn.xlarge", "local"])
def test_the_second_round_outlasts_the_ready_timeout_in_both(tmp_path, instance):
    """A model ready timeout halfway between the two rounds' ends (2 s loads, so that a
    request arriving late on a busy machine stays on its side): the four loads that waited
    for a thread are answered ModelNotReadyException (429) in both, and their loads go on."""
    ends = sorted(on_thread(e)[1] for e in simulated(tmp_path / "rounds", instance, load_s=2.0)[1])
    ready_s = (ends[3] + ends[4]) / 2
    assert ends[4] - ends[3] > 2.0
    (ok_p, predicted), (ok_m, measured) = (simulated(tmp_path / "sim", instance, ready_s, load_s=2.0),
                                           emulated(tmp_path / "emu", instance, ready_s, load_s=2.0))
    assert ok_p == ok_m == [200] * 4 + [429] * 4
    assert len(predicted) == len(measured) == N
