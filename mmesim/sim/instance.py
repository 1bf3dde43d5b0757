"""One endpoint instance: GPU memory, disk cache, host CPUs, and the models moving
remote -> on disk -> loading -> loaded -> unloading.

Where LRU eviction is decided: ``Instance._make_room``. Only *idle* loaded models (no
request admitted and unfinished) are unloaded, least recently used first; if that cannot
free enough memory, the requests waiting for the load fail as the container would (507).
Requests for a model that is already loading wait for that one load."""

from __future__ import annotations

import heapq
from collections import OrderedDict

from mmesim.catalog import CPU
from mmesim.results.records import OUT_OF_MEMORY, OVERLOADED, ModelEvent
from mmesim.sim.cores import Cores
from mmesim.sim.events import after
from mmesim.sim.gpu import GPU
from mmesim.sim.policy import lru_victims, memory_budget
from mmesim.sim.triton import ModelServer

REMOTE, DOWNLOADING, ON_DISK, LOADING, LOADED, UNLOADING = range(6)


class Slot:
    """A target model's state on one instance."""

    __slots__ = ("target", "state", "on_disk", "waiters", "server", "inflight")

    def __init__(self, target):
        self.target = target
        self.state = REMOTE
        self.on_disk = False
        self.waiters: list = []
        self.server: ModelServer | None = None
        self.inflight = 0


class Instance:
    def __init__(self, sim, index: int):
        self.sim, self.env, self.index = sim, sim.env, index
        cfg, itype, gpu = sim.endpoint, sim.instance_type, sim.gpu
        # a CPU-only host (instance type local) computes everything on one pool of cores
        self.cores = Cores(self.env, itype.vcpus) if gpu.key == CPU else None
        self.gpu = self.cores if self.cores is not None else GPU(self.env)
        self.total = gpu.nvml_total_bytes
        self.budget = memory_budget(self.total, cfg.memory_threshold)
        self.baseline = max((t.profile.baseline_gpu_bytes for t in sim.targets), default=0)
        self.used = self.baseline          # what NVML would report now
        self.committed = self.baseline     # used + loads decided but not finished - unloads decided
        self.disk_capacity = cfg.disk_cache_bytes or itype.disk_bytes
        self.disk_used = 0
        self.bandwidth = itype.network_bytes_per_s
        self._cpus = [0.0] * itype.vcpus   # FIFO over the vCPUs: a heap of "free at" times
        self.cpu_busy_s = 0.0
        self.inflight = 0
        self.peak = 0                      # most requests in flight met by an arrival this second
        self.limit = sim.max_inflight
        self.slots: dict[int, Slot] = {}
        self.lru: OrderedDict[int, Slot] = OrderedDict()   # loaded models, least recently used first
        self.disk_lru: OrderedDict[int, Slot] = OrderedDict()

    def holds(self, target) -> bool:
        """The model is loaded or on its way here (what routing looks for)."""
        slot = self.slots.get(target.id)
        return slot is not None and slot.state in (LOADED, LOADING, DOWNLOADING)

    def slot(self, target) -> Slot:
        s = self.slots.get(target.id)
        if s is None:
            s = self.slots[target.id] = Slot(target)
        return s

    # -- requests ------------------------------------------------------------------------
    def admit(self, req) -> None:
        if self.inflight > self.peak:
            self.peak = self.inflight
        if self.inflight >= self.limit:
            self.sim.reply(req, OVERLOADED)
            return
        self.inflight += 1
        slot = self.slot(req.target)
        req.slot = slot
        slot.inflight += 1
        if slot.state == LOADED:
            self.lru.move_to_end(slot.target.id)
            self._decode(req)
            return
        req.cold = True
        req.waiting = True
        slot.waiters.append(req)
        if slot.state in (REMOTE, ON_DISK):
            self._fetch(slot)

    def _decode(self, req) -> None:
        """Parse the request on the host CPUs (FIFO over vCPUs, or one core of a CPU-only
        host's shared pool), then queue it at Triton."""
        cost = req.target.decode_s
        if self.cores is not None:
            self.cores.run(cost, 1, self._to_triton, req)
            return
        now = self.env.now
        start = self._cpus[0]
        if start < now:
            start = now
        heapq.heapreplace(self._cpus, start + cost)
        self.cpu_busy_s += cost
        after(self.env, start + cost - now, req, self._decoded)

    def _decoded(self, ev) -> None:
        self._to_triton(ev._value)

    def _to_triton(self, req) -> None:
        req.slot.server.enqueue(req)

    def cpu_busy_until_now(self) -> float:
        """Host CPU seconds used so far (on a CPU-only host: every core-second, the model's too)."""
        return self.cores.core_s_until_now() if self.cores is not None else self.cpu_busy_s

    def _executed(self, batch) -> None:
        reply = self.sim.reply
        for req in batch:
            self.release(req)
            reply(req, 0)

    def release(self, req) -> None:
        """A request leaves the instance: executed, or failed while waiting."""
        req.slot.inflight -= 1
        self.inflight -= 1

    # -- model tiers ---------------------------------------------------------------------
    def _fetch(self, slot: Slot) -> None:
        if slot.on_disk:
            self._load(slot)
            return
        size = slot.target.profile.artifact_bytes
        if not self._make_disk_room(size):
            self._fail_waiters(slot)
            return
        slot.state = DOWNLOADING
        self.disk_used += size
        seconds = size / self.bandwidth
        after(self.env, seconds, slot, self._downloaded)
        self.sim.events.append(ModelEvent(self.env.now, self.index, slot.target.name, "download", seconds))

    def _downloaded(self, ev) -> None:
        slot = ev._value
        slot.on_disk = True
        slot.state = ON_DISK
        self.disk_lru[slot.target.id] = slot
        self._load(slot)

    def _load(self, slot: Slot) -> None:
        need = slot.target.profile.gpu_memory_bytes
        delay = self._make_room(need)
        if delay is None:
            self._fail_waiters(slot)
            return
        slot.state = LOADING
        self.committed += need
        self.disk_lru.move_to_end(slot.target.id)
        seconds = slot.target.profile.load_s
        after(self.env, delay + seconds, slot, self._loaded)
        self.sim.events.append(ModelEvent(self.env.now + delay, self.index, slot.target.name, "load", seconds))

    def _loaded(self, ev) -> None:
        slot = ev._value
        self._set_used(self.used + slot.target.profile.gpu_memory_bytes)
        self._serve(slot)
        waiters, slot.waiters = slot.waiters, []
        for req in waiters:
            req.waiting = False
            if req.done:            # the client gave up (ModelNotReadyException); drop it
                self.release(req)
            else:
                self._decode(req)

    def _serve(self, slot: Slot) -> None:
        """The model is in GPU memory: Triton serves it, and it joins the LRU as most recent."""
        slot.state = LOADED
        slot.server = ModelServer(self.env, slot.target.profile, self.gpu, self.sim.noise, self._executed)
        self.lru[slot.target.id] = slot

    def _make_room(self, need: int) -> float | None:
        """Unload idle models, least recently used first (policy.lru_victims), until ``need``
        bytes fit. Returns the delay until the memory is free, or None if it cannot be freed."""
        victims = lru_victims(((s, s.target.profile.gpu_memory_bytes, s.inflight == 0) for s in self.lru.values()),
                              self.committed, need, self.budget)
        if victims is None:
            return None
        delay = 0.0
        for slot in victims:
            delay = max(delay, self._unload(slot))
        return delay

    def _unload(self, slot: Slot) -> float:
        del self.lru[slot.target.id]
        slot.state = UNLOADING
        slot.server = None
        size = slot.target.profile.gpu_memory_bytes
        self.committed -= size
        seconds = slot.target.profile.unload_s
        after(self.env, seconds, slot, self._unloaded)
        self.sim.events.append(ModelEvent(self.env.now, self.index, slot.target.name, "unload", seconds))
        return seconds

    def _unloaded(self, ev) -> None:
        slot = ev._value
        self._set_used(self.used - slot.target.profile.gpu_memory_bytes)
        slot.state = ON_DISK
        if slot.waiters:           # requested while it was being unloaded: load it again
            self._load(slot)

    def _make_disk_room(self, size: int) -> bool:
        if self.disk_used + size <= self.disk_capacity:
            return True
        for tid, slot in list(self.disk_lru.items()):
            if slot.state == ON_DISK and not slot.waiters:
                del self.disk_lru[tid]
                slot.on_disk = False
                slot.state = REMOTE
                self.disk_used -= slot.target.profile.artifact_bytes
                self.sim.events.append(ModelEvent(self.env.now, self.index, slot.target.name, "evict-disk", 0.0))
                if self.disk_used + size <= self.disk_capacity:
                    return True
        return False

    def _fail_waiters(self, slot: Slot) -> None:
        slot.state = ON_DISK if slot.on_disk else REMOTE
        waiters, slot.waiters = slot.waiters, []
        for req in waiters:
            req.waiting = False
            self.release(req)
            self.sim.reply(req, OUT_OF_MEMORY)

    def _set_used(self, used: int) -> None:
        self.used = used
        self.sim.memory.append((self.env.now, self.index, used))

    def preload(self, target) -> bool:
        """Load a model before the run starts (the reference invoked every copy once before
        its load test). False if it does not fit without evicting another."""
        need = target.profile.gpu_memory_bytes
        if self.committed + need > self.budget or self.disk_used + target.profile.artifact_bytes > self.disk_capacity:
            return False
        slot = self.slot(target)
        slot.on_disk = True
        self._serve(slot)
        self.disk_used += target.profile.artifact_bytes
        self.disk_lru[target.id] = slot
        self.committed += need
        self.used += need
        self.sim.events.append(ModelEvent(0.0, self.index, target.name, "preload", 0.0))
        return True
