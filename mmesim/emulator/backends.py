"""What serves the models behind one emulated instance, as the platform sees it: load a
model directory under a name, unload it, invoke it, say how much memory is used.

- ``TritonBackend``: a real Triton in SageMaker mode (mmesim.triton's runner and MME client).
- ``VirtualBackend``: no compute. Load and unload take the profile's seconds, memory is the
  profile's, and requests go through the simulator's own Triton model (queue, dynamic
  batcher, execution instances, shared GPU) run in real time (mmesim.emulator.realtime).
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from pathlib import Path

from mmesim.emulator.errors import InsufficientMemory, InternalFailure, ModelError
from mmesim.profile import ModelProfile


class BackendDown(InternalFailure):
    """The backend's server is gone (crashed or killed); the platform restarts it."""


class Backend(ABC):
    total_bytes: int            # memory the instance reports as total (NVML total, or the budget)
    baseline_bytes: int = 0     # memory used with no model loaded

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def alive(self) -> bool:
        return True

    @abstractmethod
    async def load(self, name: str, path: Path, profile: ModelProfile | None) -> None:
        """Load the model directory ``path`` as ``name``; raises ModelError/InsufficientMemory."""

    @abstractmethod
    async def unload(self, name: str) -> None: ...

    @abstractmethod
    async def invoke(self, name: str, body: bytes, content_type: str, accept: str | None) -> tuple[int, bytes, str]:
        """(status, body, content type) as the container answered."""

    @abstractmethod
    def memory_used(self) -> int: ...

    def gpu_busy_s(self) -> float | None:
        return None

    def cpu_busy_s(self) -> float | None:
        """Host CPU seconds the instance has used (CloudWatch's CPUUtilization), where known."""
        return None


# -- a real Triton -------------------------------------------------------------------------
class TritonBackend(Backend):
    """A tritonserver in SageMaker MME mode as a local process (mmesim.triton.local), spoken
    to over the MME protocol. Memory: NVML when a GPU is visible, else the server's process
    tree (PSS), against the budget given."""

    def __init__(self, budget_total_bytes: int, binary: str | None = None, use_nvml: bool | None = None):
        self.total_bytes = budget_total_bytes
        self.binary = binary
        self.use_nvml = use_nvml
        self.server = None
        self.client = None
        self._memory = None
        self._gpu_s, self._gpu_at = 0.0, None     # GPU busy seconds integrated from NVML, and when last read
        self._cpu_s = 0.0

    async def start(self) -> None:
        from mmesim.triton.local import LocalTriton
        server = LocalTriton(binary=self.binary)
        await asyncio.to_thread(server.start)
        self.server = server
        from mmesim.triton.client import AsyncMMEClient
        self.client = AsyncMMEClient(server.sagemaker_url)
        self._memory = self._memory_reader(server)
        self.baseline_bytes = self.memory_used()

    def _memory_reader(self, server):
        from mmesim.calibrate.memory import HostMemory, NvmlMemory
        if self.use_nvml is not False:
            try:
                reader = NvmlMemory(0)
                self.total_bytes = reader.total
                return reader
            except Exception:
                if self.use_nvml:
                    raise
        return HostMemory(server.pid, self.total_bytes)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.to_thread(server.stop)

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server else None

    def alive(self) -> bool:
        return self.server is not None and self.server._alive()

    def gpu_busy_s(self) -> float | None:
        """GPU busy seconds on a GPU host: NVML's utilisation at each call, held since the
        previous one (the platform asks once a second); None without NVML."""
        busy_percent = getattr(self._memory, "busy_percent", None)
        if busy_percent is None:
            return None
        now = time.monotonic()
        try:
            percent = busy_percent()
        except Exception:
            return None
        if self._gpu_at is not None:
            self._gpu_s += percent / 100.0 * (now - self._gpu_at)
        self._gpu_at = now
        return self._gpu_s

    def cpu_busy_s(self) -> float | None:
        """CPU seconds of the server and its model processes (Python-backend stubs); what a
        SageMaker instance's CPUUtilization counts of the container. Never backwards."""
        from mmesim.process import tree_cpu_s
        total = tree_cpu_s(self.pid) if self.pid is not None else None
        if total is None:
            return None
        self._cpu_s = max(total, self._cpu_s)
        return self._cpu_s

    async def load(self, name: str, path: Path, profile: ModelProfile | None) -> None:
        from mmesim.triton.client import MMEError
        try:
            await self.client.load(name, self.server.model_url(path))
        except MMEError as exc:
            if exc.status == 409:         # already loaded (e.g. a retried load): fine
                return
            if exc.status == 507:
                raise InsufficientMemory(f"the container has no memory for the model: {exc.body[:300]}") from None
            raise ModelError(f"loading the model failed: {exc.body[:300]}", exc.status, exc.body[:2000]) from None
        except Exception as exc:
            self._down(exc)

    async def unload(self, name: str) -> None:
        from mmesim.triton.client import MMEError
        try:
            await self.client.unload(name)
        except MMEError as exc:
            if exc.status != 404:
                raise ModelError(f"unloading the model failed: {exc.body[:300]}", exc.status, exc.body[:2000]) from None
        except Exception as exc:
            self._down(exc)

    async def invoke(self, name: str, body: bytes, content_type: str, accept: str | None) -> tuple[int, bytes, str]:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        try:
            r = await self.client.invoke(name, body, headers)
        except Exception as exc:
            self._down(exc)
        return r.status, r.body, r.content_type or "application/json"

    def _down(self, exc: Exception):
        said = f"\n--- tritonserver log (last lines) ---\n{self.server.words(12)}" if self.server else ""
        if self.alive():
            raise InternalFailure(f"the backend failed: {type(exc).__name__}: {exc}{said}") from None
        raise BackendDown(f"the model server exited while serving ({type(exc).__name__}){said}") from None

    def memory_used(self) -> int:
        try:
            return int(self._memory.sample().used) if self._memory else 0
        except Exception:
            return 0


# -- a virtual GPU -------------------------------------------------------------------------
class _Request:
    """What the simulator's ModelServer queues: it reads and writes ``queued``."""

    __slots__ = ("queued", "future")

    def __init__(self, future):
        self.queued = 0.0
        self.future = future


class VirtualBackend(Backend):
    """Memory accounting, load/unload times and execution times from profiles; the
    simulator's ModelServer and GPU decide queueing, batching and GPU sharing."""

    def __init__(self, total_bytes: int, baseline_bytes: int = 0, seed: int = 0):
        self.total_bytes, self.baseline_bytes, self.seed = total_bytes, baseline_bytes, seed
        self.env = self.gpu = self.noise = None
        self.servers: dict = {}
        self.sizes: dict[str, int] = {}
        self.cpu_s = 0.0          # host CPU the requests cost, as the simulator counts it

    async def start(self) -> None:
        from mmesim.emulator.realtime import RealtimeEnv
        from mmesim.sim.gpu import GPU
        from mmesim.sim.random import streams
        self.env = RealtimeEnv()
        self.gpu = GPU(self.env)
        self.noise = streams(self.seed, ("noise",))["noise"]

    async def stop(self) -> None:
        if self.env is not None:
            self.env.close()
        for server in self.servers.values():
            for req in server.queue:
                if not req.future.done():
                    req.future.set_exception(BackendDown("the instance is stopping"))
        self.servers.clear()

    async def load(self, name: str, path: Path, profile: ModelProfile | None) -> None:
        from mmesim.sim.triton import ModelServer
        if profile is None:
            raise ModelError("the virtual backend needs a profile for this model", 500, "no profile")
        await asyncio.sleep(profile.load_s)
        self.servers[name] = ModelServer(self.env, profile, self.gpu, self.noise, self._executed)
        self.sizes[name] = profile.gpu_memory_bytes

    async def unload(self, name: str) -> None:
        server = self.servers.pop(name, None)
        self.sizes.pop(name, None)
        if server is not None:
            await asyncio.sleep(server.profile.unload_s)

    async def invoke(self, name: str, body: bytes, content_type: str, accept: str | None) -> tuple[int, bytes, str]:
        server = self.servers.get(name)
        if server is None:
            return 404, json.dumps({"error": f"model {name} is not loaded"}).encode(), "application/json"
        try:   # as Triton: the whole body is JSON (whatever the content type), or its first json-header-size bytes
            header = json.loads(body[:_json_header_size(content_type, len(body))])
            request_id = header.get("id", "") if isinstance(header, dict) else ""
            if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
                raise ValueError("expected an object with 'inputs'")
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, json.dumps({"error": f"failed to parse the request JSON buffer: {exc}"}).encode(), "application/json"
        future = asyncio.get_running_loop().create_future()
        # the server's CPU for the request (HTTP handling, parsing the body), as the simulator has it
        decode = server.profile.request_overhead_s + server.profile.decode_s_per_byte * len(body)
        self.cpu_s += decode
        if decode > 0:
            await asyncio.sleep(decode)
        server.enqueue(_Request(future))
        self.env.pump()
        await future
        answer = (f'{{"id":{json.dumps(request_id)},' if request_id else "{") + (
            f'"model_name":"{name}","model_version":"1","outputs":[{{"name":"OUTPUT__0","datatype":"FP32",'
            '"shape":[1,1],"data":[0.0]}]}')
        return 200, answer.encode(), "application/json"

    def _executed(self, batch) -> None:
        for req in batch:
            if not req.future.done():
                req.future.set_result(None)

    def memory_used(self) -> int:
        return self.baseline_bytes + sum(self.sizes.values())

    def gpu_busy_s(self) -> float | None:
        return self.gpu.busy_until_now() if self.gpu else None

    def cpu_busy_s(self) -> float | None:
        return self.cpu_s


def _json_header_size(content_type: str, n: int) -> int:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == "json-header-size" and value.isdigit():
            return int(value)
    return n
