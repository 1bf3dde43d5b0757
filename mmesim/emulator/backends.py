"""What serves the models behind one emulated instance, as the platform sees it: load a
model directory under a name, unload it, invoke it, say how much memory is used.

- ``TritonBackend``: a real Triton in SageMaker mode (mmesim.triton's runner and MME client).
- ``VirtualBackend``: no compute. The simulator's own host and Triton models run in real
  time (mmesim.emulator.realtime): loads read, deserialise and copy on the instance type's
  disk, vCPUs and PCIe (mmesim.sim.host), requests decode on the same vCPUs and queue, batch
  and execute on its GPU (on ``local``: the host's shared cores); memory is the profile's.
  An execution whose working memory is not free fails as the simulator decides it
  (mmesim.sim.triton.Workspace), answered as Triton answers a CUDA out-of-memory error; each
  unload leaves the profile's leaked bytes used until the backend restarts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
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

    async def download(self, profile: ModelProfile | None) -> None:
        """After the store fetched a model's artifact anew: what the instance's own download
        costs beyond that fetch (nothing for a real server: the fetch was real)."""

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
        return self.server is not None and self.server.running

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


# -- a virtual instance ---------------------------------------------------------------------
# Triton's answer to a backend whose allocation failed during an execution: the backend's
# error is TRITONSERVER_ERROR_INTERNAL, which Triton's HTTP server returns as 500 with the
# message as {"error": ...} (PyTorch's backend prefixes "PyTorch execute failure: ").
OOM_STATUS = 500
OOM_MESSAGE = ("PyTorch execute failure: CUDA out of memory. Tried to allocate {need:.0f} MiB "
               "({free:.0f} MiB free of {total:.0f} MiB)")


class _Request:
    """What the simulator's ModelServer queues: it reads and writes ``queued`` and ``began``; ``failure`` is
    (bytes needed, bytes free) of the execution that failed for memory, if one did."""

    __slots__ = ("queued", "began", "future", "server", "failure")

    def __init__(self, future, server):
        self.queued = 0.0
        self.future, self.server = future, server
        self.failure = None


def _settle(future, _elapsed: float = 0.0, outcome=None) -> None:
    if not future.done():
        future.set_result(outcome)


class VirtualBackend(Backend):
    """Memory accounting from profiles; the simulator's Host (loads, request decoding),
    ModelServer (queueing, batching) and processor (GPU or cores) decide every time, on the
    resources of ``instance`` (a catalogue type, or ``local``). ``used`` and ``total`` are
    what NVML would report: the device the executions' Workspace reserves from."""

    def __init__(self, total_bytes: int, baseline_bytes: int = 0, seed: int = 0, *, instance: str,
                 costs=None, wakeups=None):
        """``costs``: the endpoint's PlatformCosts, as the simulator takes them (default: the
        defaults); ``wakeups``: on ``local``, how the host places woken threads (a
        WakePlacement, as EndpointConfig.host_wakeups; default: processor sharing)."""
        self.total_bytes, self.baseline_bytes, self.seed = total_bytes, baseline_bytes, seed
        self.instance, self.costs, self.wakeups = instance, costs, wakeups
        self.env = self.host = self.gpu = self.noise = None
        self.servers: dict = {}
        self.sizes: dict[str, int] = {}
        self.used = baseline_bytes          # baseline + loaded copies + bytes leaked by unloads
        self.workspace = None
        self._waiting: set = set()          # futures of loads and requests under way

    @property
    def total(self) -> int:
        return self.total_bytes

    async def start(self) -> None:
        from mmesim.catalog import LOCAL, load_catalog, local_instance
        from mmesim.emulator.realtime import RealtimeEnv
        from mmesim.endpoint import PlatformCosts
        from mmesim.sim.host import Host
        from mmesim.sim.random import streams
        from mmesim.sim.triton import Workspace
        catalog = load_catalog()
        it = local_instance(self.total_bytes) if self.instance == LOCAL else catalog.instance(self.instance)
        self.env = RealtimeEnv()
        rs = streams(self.seed, ("noise", "placement"))
        self.host = Host(self.env, it, catalog.gpu_of(it), self.costs or PlatformCosts(), self.wakeups, rs["placement"])
        self.gpu = self.host.processor
        self.noise = rs["noise"]
        self.workspace = Workspace(self)      # a new server: nothing leaked, nothing executing
        self.sizes.clear()
        self.used = self.baseline_bytes

    async def stop(self) -> None:
        if self.env is not None:
            self.env.close()
        for future in self._waiting:
            if not future.done():
                future.set_exception(BackendDown("the instance is stopping"))
        self._waiting.clear()
        self.servers.clear()

    async def _until(self, start):
        """``start(future)`` schedules work on the simulated host; wait for it in real time
        (returns what the future was settled with: None, or a failure's cause)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.add(future)
        self.env.catch_up()
        start(future)
        self.env.pump()
        try:
            return await future
        finally:
            self._waiting.discard(future)

    async def load(self, name: str, path: Path, profile: ModelProfile | None) -> None:
        from mmesim.sim.triton import ModelServer
        if profile is None:
            raise ModelError("the virtual backend needs a profile for this model", 500, "no profile")
        await self._until(lambda f: self.host.load(profile, f, _settle))
        self.servers[name] = ModelServer(self.env, profile, self.gpu, self.noise, self._executed,
                                         self.workspace, self._failed)
        self.sizes[name] = profile.gpu_memory_bytes
        self.used += profile.gpu_memory_bytes

    async def download(self, profile: ModelProfile | None) -> None:
        """The S3 download the emulated instance would make (the store's fetch, from a local
        folder, stands in for it): S3's first byte, the shared network, untar on the vCPUs,
        as the simulator has it."""
        if profile is not None:
            await self._until(lambda f: self.host.download(profile.artifact_bytes, f, _settle))

    async def unload(self, name: str) -> None:
        from mmesim.sim.events import after
        server = self.servers.pop(name, None)
        if server is not None:
            await self._until(lambda f: after(self.env, server.profile.unload_s, f, lambda ev: _settle(ev.value)))
            leak = server.profile.leak_bytes_per_unload       # stays used until the server restarts
            self.used -= self.sizes.pop(name) - leak

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
        from mmesim.sim.host import request_handling
        # the server's CPU for the request (HTTP handling, parsing the body), as the simulator has it
        decode, frontend = request_handling(server.profile, len(body), self.host.cpu_speed, self.host.cores is not None)
        req = _Request(None, server)

        def start(future):
            req.future = future
            self.host.decode(decode, req, self._decoded, frontend)
        cause = await self._until(start)
        if cause is not None:
            need, free = req.failure
            message = OOM_MESSAGE.format(need=need / 2**20, free=free / 2**20, total=self.total_bytes / 2**20)
            return OOM_STATUS, json.dumps({"error": message}).encode(), "application/json"
        answer = (f'{{"id":{json.dumps(request_id)},' if request_id else "{") + (
            f'"model_name":"{name}","model_version":"1","outputs":{_outputs(server.profile.model, _batch(header))}}}')
        return 200, answer.encode(), "application/json"

    @staticmethod
    def _decoded(req: _Request) -> None:
        req.server.enqueue(req)

    def _executed(self, batch) -> None:
        self.host.answered()
        for req in batch:
            _settle(req.future)

    def _failed(self, batch, cause: str) -> None:
        """The simulator's ModelServer found the batch's working memory not free."""
        failure = (batch[0].server.profile.working_bytes(len(batch)),
                   max(0, self.total_bytes - self.used - self.workspace.in_use))
        for req in batch:
            req.failure = failure
            _settle(req.future, outcome=cause)

    def memory_used(self) -> int:
        return self.used

    def gpu_busy_s(self) -> float | None:
        if self.gpu is None:
            return None
        self.env.catch_up()
        self.env.pump()
        return self.gpu.busy_until_now()

    def cpu_busy_s(self) -> float | None:
        """Host CPU seconds: request decoding and loads (on ``local``, the models' work too)."""
        if self.host is None:
            return None
        self.env.catch_up()
        self.env.pump()
        return self.host.cpu_busy_until_now()


def _batch(header: dict) -> int:
    """The batch a KServe v2 request carries: its first input's first dimension (1 if unsaid)."""
    shape = header["inputs"][0].get("shape") if header["inputs"] and isinstance(header["inputs"][0], dict) else None
    first = shape[0] if isinstance(shape, list) and shape else 1
    return first if isinstance(first, int) and 1 <= first <= 1024 else 1


@functools.lru_cache(maxsize=256)
def _outputs(model: str, batch: int) -> str:
    """The JSON ``outputs`` a virtual execution answers with: zeros in the model's own output
    tensors (names, data types, shapes with the request's batch) where its spec is known (the
    built-in models), so that a client parsing the answer, and the bytes it reads, are as
    against Triton; else one FP32 zero per item."""
    from mmesim.triton.zoo import BUILTINS
    specs = BUILTINS[model][0].outputs if model in BUILTINS else None
    if not specs:
        return json.dumps([{"name": "OUTPUT__0", "datatype": "FP32", "shape": [batch, 1], "data": [0.0] * batch}],
                          separators=(",", ":"))
    zero = {"FP32": 0.0, "FP16": 0.0, "FP64": 0.0, "BOOL": False}
    return json.dumps([{"name": t.name, "datatype": t.dtype, "shape": [batch, *t.dims],
                        "data": [zero.get(t.dtype, 0)] * (batch * math.prod(t.dims))} for t in specs],
                      separators=(",", ":"))


def _json_header_size(content_type: str, n: int) -> int:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == "json-header-size" and value.isdigit():
            return int(value)
    return n
