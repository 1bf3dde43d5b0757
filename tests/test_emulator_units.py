"""Pieces of the emulator on their own: the simulator's Triton model on a real-time clock,
the lean MME client against a real aiohttp server, naming and metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import make_profile
from mmesim.emulator.emulator import base_name, profile_matcher
from mmesim.emulator.realtime import RealtimeEnv
from mmesim.sim.gpu import GPU
from mmesim.sim.random import streams
from mmesim.sim.triton import ModelServer

aiohttp = pytest.importorskip("aiohttp")


class Req:
    __slots__ = ("queued", "began", "done_at")

    def __init__(self):
        self.queued = self.done_at = 0.0


def test_the_simulators_model_server_batches_in_real_time():
    """16 requests at once at a model with one execution instance, max batch 8, 25 ms for a
    batch of 1 and 50 ms for 8 (linear between): as in Triton, the first request runs alone
    at once (25 ms), the next 8 queue meanwhile and run together (50 ms, done at 75 ms), the
    last 7 after them (25 + 25 x 6/7 = 46.4 ms, done at 121 ms)."""
    profile = make_profile(s1=0.025, max_batch=8)      # batch 8 takes 2 x s1 = 50 ms

    async def main():
        env = RealtimeEnv()
        done = []
        server = ModelServer(env, profile, GPU(env), streams(0, ("noise",))["noise"],
                             lambda batch: done.append((env.now, len(batch))))
        start = env.now
        for _ in range(16):
            server.enqueue(Req())
        env.pump()
        deadline = time.monotonic() + 30                 # however busy the machine, they all finish
        while sum(n for _, n in done) < 16 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        env.close()
        return [(t - start, n) for t, n in done]

    finished = asyncio.run(main())
    assert [n for _, n in finished] == [1, 8, 7]
    # never early: each batch ends at least its service time after the one before (a busy
    # machine can only make it later, so there is no upper bound to hold)
    ends = [0.0] + [t for t, _ in finished]
    for (prev, end), took in zip(zip(ends, ends[1:]), (0.025, 0.050, 0.025 + 0.025 * 6 / 7)):
        assert end - prev >= took - 0.002


def test_async_mme_client_reads_length_chunked_and_closing_answers():
    from aiohttp import web

    from mmesim.triton.client import AsyncMMEClient, MMEError

    async def length(request):
        return web.Response(body=b'{"ok": 1}', content_type="application/json")

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"ab", b"cde", b"f" * 70000):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def refuse(request):
        return web.Response(status=507, text="no memory", headers={"Connection": "close"})

    async def main():
        app = web.Application()
        app.router.add_post("/models/a/invoke", length)
        app.router.add_post("/models/b/invoke", chunked)
        app.router.add_post("/models", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = AsyncMMEClient(f"http://127.0.0.1:{port}")
        try:
            r = await client.invoke("a", b"{}")
            assert (r.status, r.body, r.content_type) == (200, b'{"ok": 1}', "application/json")
            results = await asyncio.gather(*(client.invoke("b", b"x" * 100) for _ in range(8)))
            assert all(x.body == b"abcde" + b"f" * 70000 for x in results)
            assert len(client._idle) >= 1                          # connections are kept and reused
            with pytest.raises(MMEError) as err:
                await client.load("m", "/x")
            assert err.value.status == 507 and "no memory" in str(err.value)
        finally:
            await client.close()
            await runner.cleanup()
        with pytest.raises(OSError):                                # the server is gone
            await AsyncMMEClient(f"http://127.0.0.1:{port}").invoke("a", b"{}")

    asyncio.run(main())


def test_targets_find_their_profile_by_the_copy_naming():
    assert base_name("resnet50-v12.tar.gz") == "resnet50" and base_name("bert-base-uncased-v0") == "bert-base-uncased"
    r50, bert = make_profile("r", model="resnet50"), make_profile("b", model="bert-base-uncased")
    pick = profile_matcher([r50, bert])
    assert pick("resnet50-v3.tar.gz") is r50 and pick("bert-base-uncased-v1.tar.gz") is bert
    assert pick("other-v0.tar.gz") is None
    assert profile_matcher([r50])("anything.tar.gz") is r50


def test_realtime_env_fires_in_time_order():
    from mmesim.sim.events import after

    async def main():
        env, seen = RealtimeEnv(), []
        for delay in (0.03, 0.01, 0.02):
            after(env, delay, delay, lambda ev: seen.append(ev._value))
        env.pump()
        t = time.monotonic()
        await asyncio.sleep(0.06)
        return seen, time.monotonic() - t

    seen, _ = asyncio.run(main())
    assert seen == [0.01, 0.02, 0.03]


class _Store:
    """An artifact store that has every name (the platform's view of emustore's ArtifactStore)."""

    def __init__(self, root):
        self.root, self.pins = root, {}

    def fetch(self, name, pin=False):
        from mmesim.emulator.store import Fetched
        self.pins[name] = self.pins.get(name, 0) + pin
        return Fetched(self.root, 1, 0.0, 0.0, True)

    def unpin(self, name):
        self.pins[name] -= 1


def test_concurrent_loads_each_unload_a_different_idle_model(tmp_path):
    """Three 4 GiB models fill the budget; two new ones arrive at once: each load must take its
    own least recently used idle victim (a, then b), never the same one twice."""
    from mmesim.emulator.backends import VirtualBackend
    from mmesim.emulator.platform import Platform

    MiB = 2**20
    profile = make_profile(mem_mib=4096, load_s=0.05, unload_s=0.05, s1=0.001, baseline_mib=1000)
    store = _Store(tmp_path)

    async def main():
        platform = Platform([VirtualBackend(15_109 * MiB, 1000 * MiB, instance="ml.g4dn.xlarge")], store, lambda target: profile)
        await platform.start()
        body = b'{"inputs": []}'
        try:
            for name in "abc":
                await platform.invoke(name, body, "application/json", None, time.monotonic())
            answers = await asyncio.gather(*(platform.invoke(n, body, "application/json", None, time.monotonic())
                                             for n in "de"))
            inst = platform.instances[0]
            first = [a.status for a in answers], list(inst.lru), inst.committed, inst.budget, dict(store.pins)
            again = await platform.invoke("a", body, "application/json", None, time.monotonic())  # unloaded: reload
            return first, (again.status, again.cold, list(inst.lru))
        finally:
            await platform.stop()

    (statuses, loaded, committed, budget, pins), again = asyncio.run(main())
    assert statuses == [200, 200]
    assert loaded == ["c", "d", "e"]
    assert committed == 1000 * MiB + 3 * 4096 * MiB <= budget
    assert pins == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}      # unloaded models' files released
    assert again == (200, True, ["d", "e", "a"])                  # a comes back cold, evicting c


def test_the_virtual_backend_counts_the_host_cpu_the_simulator_counts(tmp_path):
    """Each request costs the server request_overhead_s plus decode_s_per_byte x body on the
    host, as in the simulator: the virtual backend waits it and counts it (CPUUtilization),
    and the platform turns it into a per-second percentage summed over cores."""
    from mmesim.emulator.backends import VirtualBackend
    from mmesim.emulator.platform import Platform

    MiB = 2**20
    profile = make_profile(load_s=0.01, s1=0.001, decode=2e-6, request_overhead_s=0.004)
    body = b'{"inputs": []}' + b" " * 986                      # 1,000 bytes: 4 ms + 2 ms of host CPU

    async def main():
        backend = VirtualBackend(15_109 * MiB, 1000 * MiB, instance="ml.g4dn.xlarge")
        platform = Platform([backend], _Store(tmp_path), lambda target: profile, vcpus=8)
        await platform.start()
        watcher = asyncio.ensure_future(platform.watch(every_s=0.05))
        try:
            for _ in range(10):
                await asyncio.gather(*(platform.invoke("m", body, "application/json", None, time.monotonic())
                                       for _ in range(20)))
            await asyncio.sleep(1.2)
            return backend.cpu_busy_s(), platform.utilization.get("CPUUtilization")
        finally:
            watcher.cancel()
            await platform.stop()

    cpu_s, per_second = asyncio.run(main())
    assert cpu_s == pytest.approx(200 * 0.006)
    # 1.2 CPU-seconds, as a percentage of one second summed over cores, in the seconds closed
    # after the last request: the first alone, or the first two when this machine is busy; a
    # watcher woken late divides by the longer interval it saw (120 % at 1.0 s, 90 % at 1.33 s),
    # while a wrong conversion is off by a factor (1.2, 15, 960)
    assert 1 <= len(per_second[0]) <= 3 and 0.6 * 120 <= sum(per_second[0]) <= 120


def test_on_a_gpu_host_the_triton_backend_reads_gpu_busy_time_from_nvml(monkeypatch):
    """GPUUtilization on the Triton backend comes from NVML (faked here: there is no GPU, and
    NVML is the outermost boundary): each reading's percent held since the previous one."""
    import sys
    import types

    from mmesim.calibrate.memory import NvmlMemory
    from mmesim.emulator import backends

    readings = iter([50, 50, 100])
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: "gpu0",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=16 * 2**30, used=2**30),
        nvmlDeviceGetName=lambda h: "Tesla T4", nvmlSystemGetDriverVersion=lambda: "550.0",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=next(readings), memory=0),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    clock = iter([10.0, 12.0, 13.0])
    monkeypatch.setattr(backends, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    backend = backends.TritonBackend(2**30, use_nvml=True)
    assert backend.gpu_busy_s() is None                 # not started: no NVML reader yet
    backend._memory = NvmlMemory(0)
    assert [backend.gpu_busy_s() for _ in range(3)] == [0.0, 1.0, 2.0]   # 50 % of 2 s, then 100 % of 1 s


def test_a_sigterm_the_moment_the_url_is_printed_stops_the_emulator(tmp_path):
    """A client (or a test) that stops the emulator as soon as it reads the URL: the signal
    lands while the URL is printed, and must stop it, not be lost."""
    import subprocess
    import sys
    make_profile("m", gpu="t4").save(tmp_path / "m.json")
    (tmp_path / "models").mkdir()
    code = ("import os, signal\n"
            "from pathlib import Path\n"
            "from mmesim.emulator.emulator import EmulatorConfig, serve\n"
            "from mmesim.profile import load_profile\n"
            f"config = EmulatorConfig(instance='ml.g4dn.xlarge', models={str(tmp_path / 'models')!r}, port=0,\n"
            f"                        profiles=[load_profile({str(tmp_path / 'm.json')!r})])\n"
            "runs, _ = serve(config, on_ready=lambda url: os.kill(os.getpid(), signal.SIGTERM))\n"
            "print('stopped', len(runs))\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the SIGTERM was lost: the emulator still served a minute later")
    assert done.returncode == 0 and done.stdout.strip() == "stopped 1", done.stderr


def test_the_virtual_backend_on_local_places_woken_threads_as_the_simulator(tmp_path):
    """--host-wakeups: the virtual backend's cores are the simulator's PackedCores, with its own
    seeded draws; it describes a local host's threads, so another instance or a real Triton
    refuses it before anything listens."""
    from mmesim.emulator.backends import VirtualBackend
    from mmesim.emulator.emulator import EmulatorConfig
    from mmesim.endpoint import WakePlacement
    from mmesim.errors import ConfigError
    from mmesim.sim.cores import Cores, PackedCores
    placed = WakePlacement(packed_share=0.3, moved_after_s=0.0015)

    async def cores(wakeups):
        backend = VirtualBackend(2 * 2**30, 0, instance="local", wakeups=wakeups)
        await backend.start()
        try:
            return backend.host.cores
        finally:
            await backend.stop()
    packed, fair = asyncio.run(cores(placed)), asyncio.run(cores(None))
    assert type(packed) is PackedCores and packed.placement == placed and type(fair) is Cores
    profile = make_profile(gpu="cpu")
    EmulatorConfig(instance="local", models=str(tmp_path), profiles=[profile], host_wakeups=placed).check()
    for instance, backend in (("ml.g4dn.xlarge", "virtual"), ("local", "triton")):
        with pytest.raises(ConfigError, match="--host-wakeups.*virtual backend on --instance local"):
            EmulatorConfig(instance=instance, models=str(tmp_path), backend=backend, profiles=[profile],
                           host_wakeups=placed).check()


def test_the_virtual_backend_on_local_handles_a_request_as_its_servers_front_end_was_warm(tmp_path):
    """On --instance local, as the simulator (the same Host): a request after the server idled
    half a second costs the front end's cold figure (12 ms here, against the request cost's 4),
    five arriving together the warm one (2 ms each); the host counts what it spent."""
    from mmesim.emulator.backends import VirtualBackend
    from mmesim.emulator.platform import Platform
    # warm for up to 200 ms (a slow test machine's gaps between awaits stay on the flat part)
    curve = [{"idle_s": 0.0, "factor": 1.0, "frontend_s": 0.002}, {"idle_s": 0.2, "factor": 1.0, "frontend_s": 0.002},
             {"idle_s": 0.4, "factor": 1.0, "frontend_s": 0.012}]
    profile = make_profile(gpu="cpu", load_s=0.01, s1=0.001, max_batch=1, request_overhead_s=0.004, host_warmth=curve)
    body = b'{"inputs": []}' + b" " * 986

    async def main():
        backend = VirtualBackend(2 * 2**30, 0, instance="local")
        platform = Platform([backend], _Store(tmp_path), lambda target: profile, vcpus=2)
        await platform.start()
        try:
            await platform.invoke("m", body, "application/json", None, time.monotonic())   # loads it
            await asyncio.sleep(0.5)
            c0 = backend.host.cpu_busy_s
            await platform.invoke("m", body, "application/json", None, time.monotonic())
            c1 = backend.host.cpu_busy_s
            await asyncio.gather(*(platform.invoke("m", body, "application/json", None, time.monotonic())
                                   for _ in range(5)))
            return c1 - c0, backend.host.cpu_busy_s - c1
        finally:
            await platform.stop()

    cold, together = asyncio.run(main())
    assert cold == pytest.approx(0.012)
    assert together == pytest.approx(5 * 0.002)
