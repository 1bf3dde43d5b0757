"""What SageMaker does outside the container, for each emulated instance: fetch the
artifact, keep models within the instance's memory budget (unloading the least recently
used idle ones) and load at most 4 at once (the server's load threads) through the
simulator's own state machine (mmesim.sim.residency), load each model once while later
requests wait for that load, answer ModelNotReadyException when a load outlasts the ready timeout (the load
goes on) and ModelError (status 0) when the container has not answered by the invocation
timeout (it is not told), and route requests across instances as the simulator does.

A request counts as in flight on its model from admission to answer, and only models with
nothing in flight are unloaded: a request never fails because its model was evicted."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import logging
import time
from functools import partial
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from mmesim.emulator.backends import Backend, BackendDown
from mmesim.emulator.errors import InsufficientMemory, InvocationTimeout, ModelNotReady, ServiceUnavailable
from mmesim.endpoint import PlatformCosts
from mmesim.profile import ModelProfile
from mmesim.results.records import ModelEvent
from mmesim.sim.policy import ready_wait_s, route
from mmesim.sim.residency import LOADED, LOADING, ON_DISK, REMOTE, Resident, Residency

_log = logging.getLogger(__name__)


def container_name(target: str) -> str:
    """The name the platform loads a target under in the container: a hash, as SageMaker
    does, so any TargetModel spelling is a safe Triton model name."""
    return hashlib.sha1(target.encode()).hexdigest()[:20]


class Slot(Resident):
    """One target model's state on one instance (mmesim.sim.residency's states)."""

    __slots__ = ("task", "container")

    def __init__(self, name: str):
        super().__init__(name)
        self.task: asyncio.Future | None = None       # the load or unload under way
        self.container = container_name(name)

    @property
    def name(self) -> str:
        return self.key


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    instance: int
    cold: bool
    model_s: float          # time inside the container (ModelLatency)
    wait_s: float           # time waiting for the model's load (ModelLoadingWaitTime), 0 if warm


class Instance:
    """One emulated instance: a backend, its memory budget, its models."""

    def __init__(self, platform: "Platform", index: int, backend: Backend):
        self.platform, self.index, self.backend = platform, index, backend
        self.slots: dict[str, Slot] = {}
        self.models = Residency(0, 0, platform.load_threads)     # the simulator's state machine
        self.inflight = 0
        self.ready = False
        self.restarts = 0
        self.epoch = 0                      # +1 per backend restart: what was reserved before is gone
        self.memory_used = 0
        self._measured: dict[str, int] = {}
        self._measure_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.backend.start()
        self.models.budget = self.platform.budget_of(self.backend)
        self.models.committed = self.backend.baseline_bytes
        self.ready = True
        self.platform.sample_memory(self)

    def holds(self, target: str) -> bool:
        slot = self.slots.get(target)
        return slot is not None and slot.state in (LOADED, LOADING)

    @property
    def loaded_count(self) -> int:
        return len(self.lru)

    @property
    def lru(self) -> OrderedDict:
        """Loaded models, least recently used first."""
        return self.models.lru

    @property
    def budget(self) -> int:
        return self.models.budget

    @property
    def committed(self) -> int:
        return self.models.committed

    # -- requests --------------------------------------------------------------------------
    async def invoke(self, target: str, body: bytes, content_type: str, accept: str | None, started: float) -> Answer:
        if not self.ready:
            raise ServiceUnavailable("the instance's model server is restarting; retry")
        limit = self.platform.max_inflight
        if limit is not None and self.inflight >= limit:      # as the simulator sheds (Instance.admit)
            exc = ServiceUnavailable(f"the instance has {self.inflight} requests in flight (limit {limit}); retry")
            exc.instance, exc.cold = self.index, False
            raise exc
        slot = self.slots.get(target)
        if slot is None:
            slot = self.slots[target] = Slot(target)
        slot.inflight += 1
        self.inflight += 1
        cold = False
        try:
            wait_s = 0.0
            platform = self.platform
            if slot.state == LOADED:
                self.models.touch(slot)
            else:
                cold = True
                ready_s = ready_wait_s(platform.ready_timeout_s, platform.invocation_timeout_s)
                try:
                    await asyncio.wait_for(self._until_loaded(slot), max(ready_s - (time.monotonic() - started), 0.0))
                except asyncio.TimeoutError:
                    raise ModelNotReady(f"Model {target} is not ready yet (still loading); retry later") from None
                wait_s = time.monotonic() - started
            t = time.perf_counter()
            deadline = platform.track(started + platform.invocation_timeout_s)
            try:      # at the deadline the client is answered; the container is not told and goes on
                status, data, ctype = await self.backend.invoke(slot.container, body, content_type, accept)
            except asyncio.CancelledError:
                if not deadline[1]:
                    raise
                asyncio.current_task().uncancel()
                raise InvocationTimeout(platform.invocation_timeout_s) from None
            finally:
                deadline[0] = None
            return Answer(status, data, ctype, self.index, cold, time.perf_counter() - t, wait_s)
        except Exception as exc:
            if isinstance(exc, BackendDown):
                self.platform.backend_down(self)
            exc.instance, exc.cold = self.index, cold      # for the request log
            raise
        finally:
            slot.inflight -= 1
            self.inflight -= 1

    async def _until_loaded(self, slot: Slot) -> None:
        while slot.state != LOADED:
            if slot.state in (REMOTE, ON_DISK):     # ON_DISK: unloaded, its files in the store's cache
                slot.state = LOADING
                slot.task = asyncio.ensure_future(self._load(slot))
            await asyncio.shield(slot.task)
        self.models.touch(slot)

    # -- model tiers -----------------------------------------------------------------------
    async def _load(self, slot: Slot) -> None:
        """Fetch, make room (Residency.reserve: LRU), wait for a load thread
        (Residency.ask_thread), load; as the simulator's Instance does, in real time."""
        platform, reserved, pinned, granted, epoch = self.platform, False, False, None, self.epoch
        models = self.models
        try:   # pinned from fetch to unload: the disk cache keeps a loaded model's files
            began = platform.clock()
            fetched = await asyncio.to_thread(partial(platform.store.fetch, slot.name, pin=True))
            pinned = True
            profile = platform.profile_for(slot.name)
            if not fetched.cache_hit:
                await self.backend.download(profile)
                platform.event(ModelEvent(began, self.index, slot.name, "download", platform.clock() - began))
            measure = profile is None
            need = profile.gpu_memory_bytes if profile else self._estimate(slot.name, fetched.artifact_bytes)
            victims = models.reserve(slot, need)     # decided now (no await before): no other load picks them
            if victims is None:
                raise InsufficientMemory(f"model {slot.name} ({need / 2**20:.0f} MiB) does not fit: "
                                         f"{models.committed / 2**20:.0f} of {models.budget / 2**20:.0f} MiB "
                                         "committed and no idle model to unload")
            reserved = True
            if victims:
                await asyncio.gather(*[self._unload(v) for v in victims])
            asked = platform.clock()      # the load call: ModelLoadingTime counts from here
            granted = asyncio.get_running_loop().create_future()
            models.ask_thread(slot, lambda _s: False if granted.done() else granted.set_result(None))
            await granted
            begun = platform.clock()
            async with (self._measure_lock if measure else _nothing()):
                before = await asyncio.to_thread(self.backend.memory_used) if measure else 0
                await self.backend.load(slot.container, fetched.path, profile)
                if self.epoch != epoch:       # a restart cleared the reservation; the new server holds it
                    models.committed += need
                if measure:
                    size = max(1, await asyncio.to_thread(self.backend.memory_used) - before)
                    self._measured[slot.name] = size
                    models.committed += size - need
                    slot.size = size
            granted = None
            models.loaded(slot)
            platform.event(ModelEvent(asked, self.index, slot.name, "load", platform.clock() - asked, begun - asked))
            platform.sample_memory(self)
        except BaseException:
            if granted is not None and granted.done() and not granted.cancelled():   # held a thread
                models.release_thread()
            if reserved and self.epoch == epoch:
                models.cancel(slot)
            slot.state = REMOTE
            if pinned:
                platform.store.unpin(slot.name)
            raise

    def _estimate(self, name: str, artifact_bytes: int) -> int:
        """Memory a model without a profile is expected to take before its first load: what it
        took last time, else the mean of the models measured here, else its artifact's size."""
        if name in self._measured:
            return self._measured[name]
        if self._measured:
            return int(sum(self._measured.values()) / len(self._measured))
        return max(1, artifact_bytes)

    def _unload(self, slot: Slot) -> asyncio.Future:
        """``slot`` was chosen to make room (Residency.reserve took it out of the LRU and the
        committed memory); the backend's unload runs as a task (returned) that later requests
        can await."""
        slot.task = asyncio.ensure_future(self._do_unload(slot))
        return slot.task

    async def _do_unload(self, slot: Slot) -> None:
        t, epoch = time.perf_counter(), self.epoch
        try:
            await self.backend.unload(slot.container)
        finally:
            seconds = time.perf_counter() - t
            profile = self.platform.profile_for(slot.name) if self.epoch == epoch else None
            self.models.unloaded(slot, profile.leak_bytes_per_unload if profile else 0)   # as the simulator keeps it
            self.platform.store.unpin(slot.name)
            self.platform.event(ModelEvent(self.platform.clock() - seconds, self.index, slot.name, "unload", seconds))
            self.platform.sample_memory(self)

    # -- the backend dying -----------------------------------------------------------------
    async def restart(self) -> None:
        """Forget every model (the server that held them is gone) and start a new server."""
        self.ready = False
        self.epoch += 1
        for slot in self.models.reset(0):    # loads and unloads under way fail and settle themselves
            self.platform.store.unpin(slot.name)
        try:
            await self.backend.stop()
        except Exception:  # noqa: BLE001 - it is dead already; what matters is the new one
            pass
        for attempt in range(3):
            try:
                await self.backend.start()
                break
            except Exception:
                _log.exception("instance %d: restarting the model server failed (attempt %d)", self.index, attempt + 1)
                if attempt == 2:
                    raise
                await asyncio.sleep(2.0)
        self.models.committed = self.backend.baseline_bytes
        self.restarts += 1
        self.ready = True
        self.platform.sample_memory(self)


class _nothing:
    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return False


class Platform:
    """The endpoint's instances and the decisions above them."""

    def __init__(self, backends: list[Backend], store, profile_for: Callable[[str], ModelProfile | None],
                 threshold: float = 0.90, ready_timeout_s: float = 60.0, spread_inflight: int = 64,
                 max_inflight: int | None = None, invocation_timeout_s: float = 60.0, vcpus: int | None = None,
                 load_threads: int = PlatformCosts().load_parallelism):
        from mmesim.sim.policy import memory_budget
        self._memory_budget = memory_budget
        self.store, self.profile_for = store, profile_for
        self.threshold, self.ready_timeout_s, self.spread_inflight = threshold, ready_timeout_s, spread_inflight
        self.invocation_timeout_s = invocation_timeout_s    # a request unanswered this long after it came fails
        self.max_inflight = max_inflight          # per instance; None: no shedding
        self.vcpus = vcpus                        # per instance: CPUUtilization's ceiling is 100 x vcpus
        self.load_threads = load_threads          # loads at once per instance (the server's load threads)
        self.instances = [Instance(self, i, b) for i, b in enumerate(backends)]
        self._t0 = time.monotonic()
        self.events: list[ModelEvent] = []
        self.memory: list[tuple[float, int, int]] = []
        self.utilization: dict[str, list[list[float]]] = {}     # metric -> instance -> per second, %
        self._restarting: dict[int, asyncio.Task] = {}
        self.on_event: Callable[[ModelEvent], None] | None = None
        self._deadlines: list = []                # heap of (deadline, seq, [task or None once answered, expired])
        self._seq = itertools.count()
        self._sweeper: asyncio.Task | None = None

    def clock(self) -> float:
        """Seconds since the platform started (the time base of records and events)."""
        return time.monotonic() - self._t0

    def budget_of(self, backend: Backend) -> int:
        return self._memory_budget(backend.total_bytes, self.threshold)

    async def start(self) -> None:
        await asyncio.gather(*(i.start() for i in self.instances))
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._restarting.values():
            task.cancel()
        for inst in self.instances:
            inst.ready = False
        await asyncio.gather(*(i.backend.stop() for i in self.instances), return_exceptions=True)

    async def invoke(self, target: str, body: bytes, content_type: str, accept: str | None, started: float) -> Answer:
        inst = route(self.instances, target, self.spread_inflight)
        return await inst.invoke(target, body, content_type, accept, started)

    # -- the invocation timeout ------------------------------------------------------------
    def track(self, deadline: float) -> list:
        """The running request's deadline (monotonic seconds): past it, the sweep cancels its
        task, marking it expired. The caller sets item 0 to None once answered."""
        entry = [asyncio.current_task(), False]
        heapq.heappush(self._deadlines, (deadline, next(self._seq), entry))
        return entry

    async def _sweep(self, every_s: float = 0.1) -> None:
        """One timer for every request's deadline (an ``asyncio.timeout`` per request cost about
        40 us of CPU each, the loop's heap filling with cancelled handles); a request fails at
        most ``every_s`` after its deadline."""
        heap = self._deadlines
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic()
            while heap and (heap[0][2][0] is None or heap[0][0] <= now):
                entry = heapq.heappop(heap)[2]
                if entry[0] is not None:
                    entry[1] = True
                    entry[0].cancel()

    # -- bookkeeping ---------------------------------------------------------------------
    def event(self, ev: ModelEvent) -> None:
        self.events.append(ev)
        if self.on_event:
            self.on_event(ev)

    def sample_memory(self, inst: Instance) -> None:
        """Record the instance's memory in use now (read off the loop: a process tree's
        memory takes milliseconds to read)."""
        async def read():
            used = await asyncio.to_thread(inst.backend.memory_used)
            self.memory.append((self.clock(), inst.index, used))
            inst.memory_used = used
        asyncio.ensure_future(read())

    def backend_down(self, inst: Instance) -> None:
        """Start one restart of a dead backend (later reports of the same death join it)."""
        if inst.index in self._restarting or not inst.ready:
            return
        inst.ready = False
        task = asyncio.ensure_future(inst.restart())
        self._restarting[inst.index] = task
        task.add_done_callback(lambda _t: self._restarting.pop(inst.index, None))

    async def watch(self, every_s: float = 0.5) -> None:
        """Restart backends whose process exited, even when no request noticed; once a second,
        sample memory, the GPU's busy share of that second (GPUUtilization, where the backend
        knows it: the virtual GPU) and the host CPU used in it (CPUUtilization: percent summed
        over cores, as CloudWatch's; Triton's processes, or the virtual backend's request costs)."""
        second, last = 1, 0.0
        busy = {"GPUUtilization": [0.0] * len(self.instances), "CPUUtilization": [0.0] * len(self.instances)}
        while True:
            await asyncio.sleep(every_s)
            sample = self.clock() >= second
            for inst in self.instances:
                if inst.ready and not inst.backend.alive():
                    self.backend_down(inst)
                elif inst.ready and sample:
                    self.sample_memory(inst)
            if sample:
                now = self.clock()
                for inst in self.instances:
                    for metric, b, cap in (("GPUUtilization", inst.backend.gpu_busy_s(), 100.0),
                                           ("CPUUtilization", inst.backend.cpu_busy_s(),
                                            100.0 * self.vcpus if self.vcpus else float("inf"))):
                        if b is not None:
                            per_second = self.utilization.setdefault(metric, [[] for _ in self.instances])
                            per_second[inst.index].append(min(cap, 100.0 * (b - busy[metric][inst.index]) / (now - last)))
                            busy[metric][inst.index] = b
                second, last = int(now) + 1, now


