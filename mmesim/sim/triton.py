"""Triton inside one instance, for one loaded model: a queue, the dynamic batcher and the
model's execution instances (config.pbtxt's instance_group count).

Batching follows Triton's dynamic batcher: when an execution instance is free, it takes
the largest batch it can (up to max_batch_size) from the queue; when preferred batch sizes
and a max queue delay are set, it holds a smaller batch until the oldest request has waited
that long. Without dynamic batching every request executes alone.

Cold models: on a CPU-only host, an execution after the model has not run for a while takes
longer (``profile.host_warmth``, by the time since its last execution ended, as calibrate
measures it pacing requests): its weights and its stub's memory have left the caches, and on
a VM the idle cores have gone to others. Where calibrate split it, the stub's CPU grows by
``factor`` and the hand-off to and from the stub (``warmth_handoff``: waking threads that
slept, which holds the instance and uses no core of its own) by idle time apart, and where
calibrate read each paced execution, both are drawn with the spread measured after that idle
(``warmth_spread``): a cold execution varies more than a warm one. Before
that, a request reaching a model that idled waits for Triton's instance thread to wake
(``warmth_wakeup``, Triton's queue time one request at a time): the instance is held, no core
used, and the request counts it as queueing, as Triton's trace does. The server's own CPU on
the model's threads (``model_thread_s``: passing the execution to the stub and back) lies
inside the execution's measured time; on shared cores it takes its share of them beside the
execution, not on the request's path (elsewhere it counts with the request's handling).

First executions: a freshly loaded copy's first executions take ``profile.first_executions_s``
longer, in order (the backend initialises lazily on its first requests; calibrate times a fresh
copy's first ones): one reason the first requests after a cold start are slow, beside the load.

Working memory: an execution of batch b needs ``profile.working_bytes(b)`` above the
resident copies while it runs. When that is more than the device has free (resident copies,
bytes leaked by unloads, other executions' working memory), the backend's allocation fails
and Triton fails that execution's requests (the client sees a ModelError whose message is
the out-of-memory error) and serves the next batch: the model stays loaded."""

from __future__ import annotations

from collections import deque

from mmesim.profile import ModelProfile
from mmesim.results.records import EXECUTION_OOM
from mmesim.sim.cores import Cores
from mmesim.sim.events import after, nothing


class Workspace:
    """The device memory executions share above what is resident (``device.used``, which
    counts loaded copies and leaked bytes) up to ``device.total``: what NVML would call free."""

    __slots__ = ("device", "in_use")

    def __init__(self, device):
        self.device = device
        self.in_use = 0

    def take(self, need: int) -> bool:
        """Reserve ``need`` bytes for one execution; False (and nothing reserved) if they are not free."""
        if need and self.device.used + self.in_use + need > self.device.total:
            return False
        self.in_use += need
        return True

    def give(self, need: int) -> None:
        self.in_use -= need


class ModelServer:
    __slots__ = ("env", "profile", "gpu", "noise", "done", "queue", "free", "limit", "_delay",
                 "_preferred", "_wake_at", "_timing", "_share", "_cv", "executions", "batched", "workspace", "failed",
                 "_working", "_handoff", "_handoffs", "_warmth", "_spread", "_wakeups", "_beside", "_besides", "_ran",
                 "_first")

    def __init__(self, env, profile: ModelProfile, gpu, noise, done, workspace: Workspace | None = None,
                 failed=None):
        """``done(batch)`` hears executed batches; with a ``workspace``, ``failed(batch, cause)``
        hears those whose working memory was not free."""
        self.env, self.profile, self.gpu, self.noise, self.done = env, profile, gpu, noise, done
        self.workspace, self.failed = (workspace, failed) if profile.working_memory else (None, None)
        self.queue: deque = deque()
        cfg = profile.triton
        self.free = cfg.instance_count
        self.limit = cfg.batch_limit
        self._delay = cfg.max_queue_delay_s if cfg.dynamic_batching else 0.0
        self._preferred = max(cfg.preferred_batch_sizes, default=0) if cfg.dynamic_batching else 0
        self._wake_at = None
        # service time by batch size, precomputed: the hot path only indexes a list
        self._timing = [0.0] + [profile.service_time(b) for b in range(1, self.limit + 1)]
        self._cv = [0.0] + [profile.service_cv(b) for b in range(1, self.limit + 1)]
        self._working = [0] + [profile.working_bytes(b) for b in range(1, self.limit + 1)]
        self._share = gpu.tag(profile)       # how its executions share the GPU (or the host's cores)
        self._handoff = profile.handoff_s
        # on a CPU-only host a model that has not executed for a while runs cold (profile.host_warmth),
        # and where calibrate split it, its hand-off wakes threads that slept longer, too
        self._warmth = profile.warmth_factor if profile.host_warmth and isinstance(gpu, Cores) else None
        self._handoffs = profile.warmth_handoff if self._warmth and profile.handoff_by_idle else None
        # and varies more than back to back: each part drawn with its spread after that idle
        self._spread = profile.warmth_spread if self._warmth and profile.spread_by_idle else None
        # and Triton's instance thread, asleep since, takes a while to pick a request up
        self._wakeups = profile.warmth_wakeup if self._warmth and profile.wakeup_by_idle else None
        # the server's own CPU on the model's threads (the messages to its stub), inside the
        # execution's measured time: on shared cores it takes cores beside the execution
        self._beside = profile.model_thread_s if isinstance(gpu, Cores) else 0.0
        # which cool between executions too, where calibrate paced them
        self._besides = profile.warmth_model_thread if self._beside and profile.model_thread_by_idle else None
        self._ran = env.now                  # when an execution last ended (loading ran the model too)
        self._first = profile.first_executions_s   # a fresh copy's first executions: longer, in order
        self.executions = 0
        self.batched = 0

    def enqueue(self, req) -> None:
        req.queued = self.env.now
        self.queue.append(req)
        if self.free:
            self._dispatch()

    def _dispatch(self) -> None:
        queue = self.queue
        while self.free and queue:
            n = min(len(queue), self.limit)
            if self._delay and n < self._preferred:
                due = queue[0].queued + self._delay
                if self.env.now < due:
                    if self._wake_at is None or self._wake_at > due:
                        self._wake_at = due
                        after(self.env, due - self.env.now, None, self._wake)
                    return
            batch = [queue.popleft()] if n == 1 else [queue.popleft() for _ in range(n)]
            now = self.env.now
            idle = now - self._ran
            # a request that was waiting when the last execution ended finds the thread awake
            wakeup = self._wakeups(idle) if self._wakeups is not None and idle > 0 else 0.0
            for req in batch:
                req.began = now + wakeup
            if self.workspace is not None and not self.workspace.take(self._working[n]):
                self.failed(batch, EXECUTION_OOM)
                continue
            self.free -= 1
            self.executions += 1
            self.batched += n
            cv, handoff_cv = self._cv[n], 0.0
            if self._warmth is None:
                mean, handoff = self._timing[n], self._handoff
            else:
                mean = self._timing[n] * self._warmth(idle)
                handoff = self._handoff if self._handoffs is None else self._handoffs(idle)
                if self._spread is not None:
                    cv, handoff_cv = self._spread(idle, self.noise.random())
            work = self.noise.gamma(mean, cv)
            if handoff and handoff_cv:
                handoff = self.noise.gamma(handoff, handoff_cv)
            if self._first and self.executions <= len(self._first):
                work += self._first[self.executions - 1]
            beside = self._beside if self._besides is None else self._besides(idle)
            if wakeup:
                after(self.env, wakeup, (work, batch, handoff, beside), lambda ev: self._execute(*ev.value))
            else:
                self._execute(work, batch, handoff, beside)

    def _execute(self, work: float, batch, handoff: float, beside: float) -> None:
        if beside:
            self.gpu.run(beside, 1, nothing, None)
        if handoff:
            self.gpu.run(work, self._share, self._handed_back, (batch, handoff))
        else:
            self.gpu.run(work, self._share, self._finish, batch)

    def _wake(self, _ev) -> None:
        self._wake_at = None
        self._dispatch()

    def _handed_back(self, job) -> None:
        """The stub's answer reaches Triton: a wake-up that holds the instance and uses no core
        of its own, but needs one to run on, so on shared cores it is a job of weight 0 (it
        moves at the pace the oversubscribed cores allow and takes nothing from the others)."""
        batch, handoff = job
        if isinstance(self.gpu, Cores):
            self.gpu.run(handoff, 0, self._finish, batch)
        else:
            after(self.env, handoff, batch, lambda ev: self._finish(ev.value))

    def _finish(self, batch) -> None:
        self.free += 1
        self._ran = self.env.now
        if self.workspace is not None:
            self.workspace.give(self._working[len(batch)])
        self.done(batch)
        if self.queue:
            self._dispatch()
