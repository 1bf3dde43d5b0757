"""One endpoint instance: GPU memory, disk cache, host CPUs, and the models moving
remote -> on disk -> loading -> loaded -> unloading.

What a move costs (EndpointConfig.platform, PlatformCosts): a download waits S3's first byte,
shares the instance's network with the other downloads, then untars on one vCPU; a load waits
for one of ``load_parallelism`` load threads, reads the artifact from the cache volume
(shared), deserialises on one vCPU and copies its resident bytes over PCIe (shared). A
profile's ``load_s`` is one load alone: its deserialising part is what remains once the read
and the copy, at the instance's rates, are taken out. Untar and deserialising share the vCPUs
as the OS shares them (one core each while there are enough, time-sliced beyond); request
decoding keeps its own FIFO over the vCPUs and does not see them.

Where LRU eviction is decided: ``Instance._make_room``. Only *idle* loaded models (no
request admitted and unfinished) are unloaded, least recently used first; if that cannot
free enough memory, the requests waiting for the load fail as the container would (507).
Requests for a model that is already loading wait for that one load."""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque

from mmesim.catalog import CPU
from mmesim.results.records import DISK_FULL, OUT_OF_MEMORY, OVERLOADED, ModelEvent
from mmesim.sim.cores import Cores
from mmesim.sim.events import after
from mmesim.sim.gpu import GPU
from mmesim.sim.policy import lru_victims, memory_budget
from mmesim.sim.transfer import SharedRate
from mmesim.sim.triton import ModelServer, Workspace

REMOTE, DOWNLOADING, ON_DISK, LOADING, LOADED, UNLOADING = range(6)


class Slot:
    """A target model's state on one instance."""

    __slots__ = ("target", "state", "on_disk", "waiters", "server", "inflight", "since")

    def __init__(self, target):
        self.target = target
        self.state = REMOTE
        self.on_disk = False
        self.waiters: list = []
        self.server: ModelServer | None = None
        self.inflight = 0
        self.since = 0.0           # when the move in progress (download, load) began


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
        self.workspace = Workspace(self)   # executions' working memory above ``used``
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
        costs = cfg.platform
        self.costs = costs
        self.network = SharedRate(self.env, self.bandwidth, costs.s3_streams_per_download * costs.s3_stream_bytes_per_s)
        disk_rate = itype.disk_read_bytes_per_s
        self.disk = SharedRate(self.env, disk_rate) if disk_rate else None
        self.pcie = SharedRate(self.env, gpu.pcie_gbs * 1e9 * costs.h2d_share) if gpu.pcie_gbs else None
        self.cpu_speed = itype.cpu_speed
        self.host = SharedRate(self.env, itype.vcpus, 1.0)     # CPU-seconds: untar and deserialising
        self.loading = 0                   # loads holding a load thread
        self.load_queue: deque[Slot] = deque()

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
        self.sim.wait_for_model(req)
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

    def _failed(self, batch, cause: str) -> None:
        for req in batch:
            self.release(req)
            self.sim.reply(req, cause)

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
            self._fail_waiters(slot, DISK_FULL)
            return
        slot.state = DOWNLOADING
        slot.since = self.env.now
        self.disk_used += size
        after(self.env, self.costs.s3_first_byte_s, slot, self._first_byte)

    def _first_byte(self, ev) -> None:
        slot = ev._value
        self.network.start(slot.target.profile.artifact_bytes, slot, self._received)

    def _received(self, slot: Slot, seconds: float) -> None:
        self._on_cpu(slot.target.profile.artifact_bytes / (self.costs.untar_bytes_per_s * self.cpu_speed), slot,
                     self._downloaded)

    def _downloaded(self, slot: Slot, seconds: float) -> None:
        now = self.env.now
        self.sim.events.append(ModelEvent(slot.since, self.index, slot.target.name, "download", now - slot.since))
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
        if delay:
            after(self.env, delay, slot, self._load_called)
        else:
            self._load_call(slot)

    def _load_called(self, ev) -> None:
        self._load_call(ev._value)

    def _load_call(self, slot: Slot) -> None:
        """The platform asks the server to load (memory is free): a load thread, or the queue."""
        slot.since = self.env.now
        if self.loading < self.costs.load_parallelism:
            self._load_begin(slot)
        else:
            self.load_queue.append(slot)

    def _load_begin(self, slot: Slot) -> None:
        self.loading += 1
        if self.disk is not None:
            self.disk.start(slot.target.profile.artifact_bytes, slot, self._read)
        else:
            self._read(slot, 0.0)

    def _read(self, slot: Slot, seconds: float) -> None:
        self._on_cpu(self.deserialise_s(slot.target.profile), slot, self._deserialised)

    def _deserialised(self, slot: Slot, seconds: float) -> None:
        if self.pcie is not None:
            self.pcie.start(slot.target.profile.gpu_memory_bytes, slot, self._loaded)
        else:
            self._loaded(slot, 0.0)

    def deserialise_s(self, profile) -> float:
        """Host CPU seconds of one load: ``load_s`` less its read and copy at this instance's
        rates (alone), moved to this instance's CPU speed as request decoding is."""
        io = 0.0
        if self.disk is not None:
            io += profile.artifact_bytes / self.disk.total
        if self.pcie is not None:
            io += profile.gpu_memory_bytes / self.pcie.total
        return max(0.0, profile.load_s - io) * profile.host_cpu_speed / self.cpu_speed

    def _on_cpu(self, seconds: float, slot: Slot, callback) -> None:
        """``seconds`` of one thread's work on the shared vCPUs, then ``callback(slot, elapsed)``."""
        self.cpu_busy_s += seconds
        if seconds > 0 and self.cores is not None:     # a CPU-only host: the same cores as everything else
            began = self.env.now
            self.cores.run(seconds, 1, lambda s: callback(s, self.env.now - began), slot)
        elif seconds > 0:
            self.host.start(seconds, slot, callback)
        else:
            callback(slot, 0.0)

    def _loaded(self, slot: Slot, seconds: float) -> None:
        now = self.env.now
        self.sim.events.append(ModelEvent(slot.since, self.index, slot.target.name, "load", now - slot.since))
        self.loading -= 1
        if self.load_queue:
            self._load_begin(self.load_queue.popleft())
        self._set_used(self.used + slot.target.profile.gpu_memory_bytes)
        self._serve(slot)
        waiters, slot.waiters = slot.waiters, []
        for req in waiters:
            if not req.done:        # else answered already (ModelNotReadyException) and released
                req.waiting = False
                self._decode(req)

    def _serve(self, slot: Slot) -> None:
        """The model is in GPU memory: Triton serves it, and it joins the LRU as most recent."""
        slot.state = LOADED
        slot.server = ModelServer(self.env, slot.target.profile, self.gpu, self.sim.noise, self._executed,
                                  self.workspace, self._failed)
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
        leak = slot.target.profile.leak_bytes_per_unload     # stays used until the instance restarts
        self.committed += leak
        self._set_used(self.used - slot.target.profile.gpu_memory_bytes + leak)
        slot.state = ON_DISK
        slot.waiters = [r for r in slot.waiters if not r.done]
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

    def _fail_waiters(self, slot: Slot, cause: str = OUT_OF_MEMORY) -> None:
        slot.state = ON_DISK if slot.on_disk else REMOTE
        waiters, slot.waiters = slot.waiters, []
        for req in waiters:
            if not req.done:
                req.waiting = False
                self.release(req)
                self.sim.reply(req, cause)

    def abandon(self, req) -> None:
        """A request waiting for its model is to be answered without it (ModelNotReadyException):
        it leaves the instance now (its entry in the waiters is skipped once answered); the
        download or load goes on."""
        req.waiting = False
        self.release(req)

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
