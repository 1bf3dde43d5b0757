"""One endpoint instance: GPU memory, disk cache, host CPUs, and the models moving
remote -> on disk -> loading -> loaded -> unloading.

What a move costs is mmesim.sim.host (EndpointConfig.platform, PlatformCosts): a download
waits S3's first byte, shares the network, then untars on one vCPU; a load reads the
artifact from the cache volume (shared), deserialises on one vCPU and copies its resident
bytes over PCIe (shared). Untar, deserialising and request decoding share the vCPUs.
Which model moves when is mmesim.sim.residency, the state machine the emulator's platform
runs too: memory committed against the budget, LRU eviction, ``load_parallelism`` load
threads (a fifth load waits).

Where LRU eviction is decided: ``Residency.reserve`` (policy.lru_victims). Only *idle*
loaded models (no request admitted and unfinished) are unloaded, least recently used first;
if that cannot free enough memory, the requests waiting for the load fail as the container
would (507). Requests for a model that is already loading wait for that one load."""

from __future__ import annotations

from collections import OrderedDict

from mmesim.results.records import DISK_FULL, OUT_OF_MEMORY, OVERLOADED, ModelEvent
from mmesim.sim.events import after
from mmesim.sim.host import Host
from mmesim.sim.policy import memory_budget
from mmesim.sim.residency import DOWNLOADING, LOADED, LOADING, ON_DISK, REMOTE, Resident, Residency
from mmesim.sim.triton import ModelServer, Workspace


class Slot(Resident):
    """A target model's state on one instance."""

    __slots__ = ("target", "on_disk", "waiters", "server", "since", "thread_at")

    def __init__(self, target):
        super().__init__(target.id, target.profile.gpu_memory_bytes)
        self.target = target
        self.on_disk = False
        self.waiters: list = []
        self.server: ModelServer | None = None
        self.since = 0.0           # when the move in progress (download, load) began
        self.thread_at = 0.0       # when its load took a load thread


class Instance:
    def __init__(self, sim, index: int):
        self.sim, self.env, self.index = sim, sim.env, index
        cfg, itype, gpu = sim.endpoint, sim.instance_type, sim.gpu
        self.host = Host(self.env, itype, gpu, cfg.platform, sim.host_wakeups, sim.placement)
        self.cores, self.gpu = self.host.cores, self.host.processor
        self.total = gpu.nvml_total_bytes
        self.budget = memory_budget(self.total, cfg.memory_threshold)
        self.baseline = max((t.profile.baseline_gpu_bytes for t in sim.targets), default=0)
        self.used = self.baseline          # what NVML would report now
        self.models = Residency(self.budget, self.baseline, cfg.platform.load_parallelism)
        self.lru: OrderedDict[int, Slot] = self.models.lru   # loaded models, least recently used first
        self.workspace = Workspace(self)   # executions' working memory above ``used``
        self.disk_capacity = cfg.disk_cache_bytes or itype.disk_bytes
        self.disk_used = 0
        self.inflight = 0
        self.peak = 0                      # most requests in flight met by an arrival this second
        self.limit = sim.max_inflight
        self.slots: dict[int, Slot] = {}
        self.disk_lru: OrderedDict[int, Slot] = OrderedDict()

    @property
    def committed(self) -> int:
        """Memory resident or on its way (what routing and eviction count)."""
        return self.models.committed

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
            self.models.touch(slot)
            self.host.decode(req.target.decode_s, req, self._to_triton, req.target.frontend)
            return
        req.cold = True
        req.waiting = True
        slot.waiters.append(req)
        self.sim.wait_for_model(req)
        if slot.state in (REMOTE, ON_DISK):
            self._fetch(slot)

    def _to_triton(self, req) -> None:
        """Decoded (on the host's CPUs): Triton queues it."""
        req.slot.server.enqueue(req)

    def cpu_busy_until_now(self) -> float:
        return self.host.cpu_busy_until_now()

    def _executed(self, batch) -> None:
        self.host.answered()
        reply = self.sim.reply
        for req in batch:
            req.slot.inflight -= 1          # release(req), inline: the hot path
            self.inflight -= 1
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
        self.host.download(size, slot, self._downloaded)

    def _downloaded(self, slot: Slot, _s: float) -> None:
        now = self.env.now
        self.sim.events.append(ModelEvent(slot.since, self.index, slot.target.name, "download", now - slot.since))
        slot.on_disk = True
        slot.state = ON_DISK
        self.disk_lru[slot.target.id] = slot
        self._load(slot)

    def _load(self, slot: Slot) -> None:
        victims = self.models.reserve(slot, slot.target.profile.gpu_memory_bytes)
        if victims is None:
            self._fail_waiters(slot)
            return
        self.disk_lru.move_to_end(slot.target.id)
        delay = max((self._unload(v) for v in victims), default=0.0)
        if delay:
            after(self.env, delay, slot, self._load_called)
        else:
            self._load_call(slot)

    def _load_called(self, ev) -> None:
        self._load_call(ev.value)

    def _load_call(self, slot: Slot) -> None:
        """The platform asks the server to load (memory is free): a load thread, or the queue.
        ModelLoadingTime counts from here, as CloudWatch's covers the whole load call."""
        slot.since = self.env.now
        self.models.ask_thread(slot, self._load_begin)

    def _load_begin(self, slot: Slot) -> None:
        slot.thread_at = self.env.now
        self.host.load(slot.target.profile, slot, self._loaded)

    def _loaded(self, slot: Slot, _s: float) -> None:
        now = self.env.now
        self.sim.events.append(ModelEvent(slot.since, self.index, slot.target.name, "load", now - slot.since,
                                          slot.thread_at - slot.since))
        self._set_used(self.used + slot.target.profile.gpu_memory_bytes)
        self._serve(slot)
        self.models.loaded(slot)
        waiters, slot.waiters = slot.waiters, []
        for req in waiters:
            if not req.done:        # else answered already (ModelNotReadyException) and released
                req.waiting = False
                self.host.decode(req.target.decode_s, req, self._to_triton, req.target.frontend)

    def _serve(self, slot: Slot) -> None:
        """The model is in GPU memory: Triton serves it."""
        slot.server = ModelServer(self.env, slot.target.profile, self.gpu, self.sim.noise, self._executed,
                                  self.workspace, self._failed)

    def _unload(self, slot: Slot) -> float:
        """``slot`` was chosen to make room (out of the LRU and the committed memory already)."""
        slot.server = None
        seconds = slot.target.profile.unload_s
        after(self.env, seconds, slot, self._unloaded)
        self.sim.events.append(ModelEvent(self.env.now, self.index, slot.target.name, "unload", seconds))
        return seconds

    def _unloaded(self, ev) -> None:
        slot = ev.value
        leak = slot.target.profile.leak_bytes_per_unload     # stays used until the instance restarts
        self._set_used(self.used - slot.target.profile.gpu_memory_bytes + leak)
        self.models.unloaded(slot, leak)
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
        slot.state = ON_DISK if slot.on_disk else REMOTE     # nothing was reserved for it
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
        its load test). Its first executions (``first_executions_s``) stay ahead of it, as for
        a copy loaded through the API and not yet invoked (validate_local's; docs/accuracy-this-
        machine.md, section 12): a load test that warmed its copies further sees fewer slow
        first requests. False if it does not fit without evicting another."""
        need = target.profile.gpu_memory_bytes
        if self.disk_used + target.profile.artifact_bytes > self.disk_capacity:
            return False
        slot = self.slot(target)
        if not self.models.preload(slot, need):
            return False
        slot.on_disk = True
        self._serve(slot)
        self.disk_used += target.profile.artifact_bytes
        self.disk_lru[target.id] = slot
        self.used += need
        self.sim.events.append(ModelEvent(0.0, self.index, target.name, "preload", 0.0))
        return True
