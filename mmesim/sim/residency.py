"""Which models one instance holds and how they move in and out of its memory: the state
machine the simulator's instances and the emulator's platform both run, so an emulated
endpoint loads, queues, evicts and unloads exactly as a predicted one.

A model (a ``Resident``) goes REMOTE -> (DOWNLOADING) -> ON_DISK -> LOADING -> LOADED ->
UNLOADING -> ON_DISK. ``Residency`` keeps what is committed against the memory budget
(resident bytes plus loads decided, less unloads decided), the LRU of loaded models, and the
server's load threads (Triton's --model-load-thread-count, 4 by default: a fifth load
waits for one of them). It schedules nothing itself: whoever drives it (SimPy events, or
asyncio tasks) says when a load begins, ends or fails, and it says what runs next."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Callable

from mmesim.sim.policy import lru_victims

REMOTE, DOWNLOADING, ON_DISK, LOADING, LOADED, UNLOADING = range(6)


class Resident:
    """One model's place on one instance: ``key`` names it, ``size`` is the memory it holds
    once loaded, ``inflight`` the requests admitted for it and unfinished (only a model with
    none is unloaded)."""

    __slots__ = ("key", "state", "size", "inflight")

    def __init__(self, key, size: int = 0):
        self.key, self.size = key, size
        self.state = REMOTE
        self.inflight = 0


class Residency:
    def __init__(self, budget: int, baseline: int, load_threads: int):
        self.budget = budget
        self.committed = baseline                 # resident + loads decided - unloads decided
        self.threads = load_threads
        self.lru: OrderedDict = OrderedDict()     # key -> loaded Resident, least recently used first
        self.loading = 0                          # loads holding a load thread
        self._waiting: deque = deque()            # (resident, begin) waiting for a thread

    def touch(self, r: Resident) -> None:
        """A request for a loaded model: it becomes the most recently used."""
        self.lru.move_to_end(r.key)

    def reserve(self, r: Resident, need: int) -> list[Resident] | None:
        """Commit ``need`` bytes for loading ``r``, evicting idle models least recently used
        first (policy.lru_victims): returns the models to unload (each already out of the LRU
        and of the committed bytes, state UNLOADING), or None when nothing frees enough
        (nothing changes then)."""
        victims = lru_victims(((v, v.size, v.inflight == 0) for v in self.lru.values()), self.committed, need,
                              self.budget)
        if victims is None:
            return None
        for v in victims:
            self.evict(v)
        self.committed += need
        r.size = need
        r.state = LOADING
        return victims

    def evict(self, r: Resident) -> None:
        del self.lru[r.key]
        r.state = UNLOADING
        self.committed -= r.size

    def unloaded(self, r: Resident, leaked: int = 0) -> None:
        """``r``'s unload ended; ``leaked`` bytes it did not return stay committed until the
        server restarts (``reset``)."""
        r.state = ON_DISK
        self.committed += leaked

    def ask_thread(self, r: Resident, begin: Callable[[Resident], object]) -> None:
        """The server is asked to load ``r`` (its memory is free): ``begin(r)`` now if a load
        thread is free, else once one is, in the order asked. ``begin`` returns False when
        the load is gone meanwhile (the thread then goes to the next)."""
        self._waiting.append((r, begin))
        self._next()

    def _next(self) -> None:
        while self._waiting and self.loading < self.threads:
            r, begin = self._waiting.popleft()
            self.loading += 1
            if begin(r) is False:
                self.loading -= 1

    def loaded(self, r: Resident) -> None:
        """``r``'s load ended: it leaves its thread and joins the LRU as the most recent."""
        r.state = LOADED
        self.lru[r.key] = r
        self.release_thread()

    def release_thread(self) -> None:
        self.loading -= 1
        self._next()

    def cancel(self, r: Resident) -> None:
        """``r``'s load failed or was abandoned before it ended: its bytes are uncommitted."""
        self.committed -= r.size
        r.state = REMOTE

    def preload(self, r: Resident, need: int) -> bool:
        """``r`` loaded before traffic starts, if it fits without evicting another."""
        if self.committed + need > self.budget:
            return False
        self.committed += need
        r.size = need
        r.state = LOADED
        self.lru[r.key] = r
        return True

    def reset(self, baseline: int) -> list[Resident]:
        """The server that held the models is gone: forget them (returned), commit the new
        server's baseline. Loads holding threads settle through ``release_thread``."""
        gone = list(self.lru.values())
        for r in gone:
            r.state, r.size = REMOTE, 0
        self.lru.clear()
        self.committed = baseline
        return gone
