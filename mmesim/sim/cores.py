"""A CPU-only host's cores, shared by everything that computes on it.

On the instance type ``local`` there is no GPU: a model's executions, Triton's handling of
each request (HTTP, decoding the payload) and, when the load generator runs on the same
host, the client's work all run on the same N cores. The model is processor sharing with
per-job demand:

- a job can use up to ``demand`` cores: an execution of a Python-backend model uses its
  instance's ``cpu_threads`` (torch intra-op threads; one when the profile does not say),
  a request's decoding one (a Triton HTTP thread), a Locust worker's work one (one
  process, one interpreter lock);
- while the running jobs' demands D add up to at most N, every job runs at full speed
  (a job's work is its time alone, measured with its full demand); beyond that the
  operating system shares the cores among the threads, so every job slows by N / D.

So two models with 2 threads each on 2 cores run at half speed together, one model with
one thread on 2 cores is untouched by the idle second core, and client work on the same
host slows the server. The assumptions: threads scale perfectly up to their demand, and
the scheduler is fair among runnable threads (Linux CFS is, to first order). Short requests
show where that stops: Triton's trace on a 2-vCPU VM (docs/accuracy-this-machine.md, "Inside
the server") has one-thread executions that overlapped another run 1.4 times as long on average as those
alone, with a core to spare; the median is right, the tail is not (p95 about 10-20 % short).
That VM often runs two threads woken together on one vCPU, and halts idle ones; and with
every core busy Linux does not slow all threads alike but runs a woken one at once in place of
another, for a slice (examples/host_wakeups.py measures both without Triton): ``PackedCores``
is processor sharing with that placement (EndpointConfig.host_wakeups), ``Cores`` the model
of a host that places every woken thread on an idle core and shares a full one fairly.

Core-seconds used (min(N, D) over time) are CloudWatch's CPUUtilization on this host."""

from __future__ import annotations

from mmesim.profile import ModelProfile
from mmesim.sim.events import after
from mmesim.sim.sharing import SharedProcessor


class Cores(SharedProcessor):
    """``cores`` shared by jobs that each use up to their tag's worth of them (``demand``):
    every job runs at min(1, cores / demand) of its speed alone."""

    __slots__ = ()

    def __init__(self, env, cores: int):
        super().__init__(env, cores, 1.0)

    @property
    def cores(self) -> int:
        return self.total

    @property
    def core_s(self) -> float:
        """Core-seconds used so far (min(N, D) over time), up to the last change."""
        return self.done

    def tag(self, profile: ModelProfile) -> int:
        """What a model's executions pass to ``run``: the cores one execution can use (never
        more than the host has: its time alone was measured with what it could get)."""
        return min(profile.cpu_threads or 1, self.total)

    def core_s_until_now(self) -> float:
        return self.done_until_now()


class PackedCores(Cores):
    """Cores on a host that sometimes runs a thread it wakes on a busy core although another
    core is idle (``placement``: an EndpointConfig.host_wakeups, measured by
    examples/host_wakeups.py).

    A job that starts while at least one thread computes and the idle cores would hold it
    lands, with probability ``packed_share``, on the core of a running thread (drawn at
    random) and runs first: that thread stops, computing nothing and taking no core, for the
    newcomer's time alone or ``moved_after_s``, whichever is shorter (then the kernel has moved
    one of them to the idle core), and goes on with the work it had left. So the thread that
    waits is the one that was running, as Triton's stubs and the probe's show (the first of two
    overlapping executions waits, the second rarely). A job that starts with every core idle,
    or with too few idle for it (then it takes its fair share, as processor sharing has it),
    and a hand-off (weight 0: it computes nothing), displaces nobody.

    With every core busy (``full_share``, ``slice_s``: measured on a full host), a job that
    starts runs at once, with probability ``full_share``, in place of a running thread drawn at
    random, which stands still for the newcomer's time alone or its slice, whichever is
    shorter: Linux's wake-up preemption, where processor sharing would slow every thread to
    N / D. Otherwise, with ``late_wait_s`` measured, it waits that long (the rest of a running
    thread's slice, which the kernel lets it finish) and then runs in place of a running
    thread as above, unless a core frees first: then it starts there at once (the probe's
    newcomers that did not run at once started as soon as another core's thread ended,
    docs/accuracy-this-machine.md, section 9). Without ``late_wait_s`` it takes its fair
    share. A displaced thread stands still its time out even if a core frees meanwhile, though
    the probe (examples/host_wakeups.py) saw about half of them move there at once: moving them
    so was built and tried, and it shortened every predicted tail that was already short, in
    seven windows of Triton runs and in a chain of processes without Triton (section 10), so the
    standing stands in for some of what lengthens the tails here and is kept, said as such."""

    __slots__ = ("placement", "rng", "woken", "packed", "packed_s", "crowded", "preempted", "preempted_s", "late",
                 "late_s", "queued")

    def __init__(self, env, cores: int, placement, rng):
        super().__init__(env, cores)
        self.placement, self.rng = placement, rng
        self.woken = 0          # jobs that started with a core idle and another thread running
        self.packed = 0         # of which landed on a running thread's core
        self.packed_s = 0.0     # the time the displaced threads stood still, in all
        self.crowded = 0        # jobs that started with every core busy
        self.preempted = 0      # of which ran in place of a running thread, at once or after a slice
        self.preempted_s = 0.0  # the time the threads they displaced stood still, in all
        self.late = 0           # of the crowded, those that waited for a slice to end or a core to free
        self.late_s = 0.0       # the time they waited, in all
        self.queued: list = []  # those waiting now, in order: [work, tag, callback, arg, since]

    def run(self, work: float, tag, callback, arg) -> None:
        if tag != 0 and self.demand > 0:
            placed = self.placement
            if self.demand <= self.total - (tag if type(tag) is int else 1):   # it fits on the idle cores
                self.woken += 1
                if self.rng.random() < placed.packed_share:
                    self.packed += 1
                    self.packed_s += self._displace(min(work, placed.moved_after_s))
            elif self.demand >= self.total and (placed.full_share or placed.late_wait_s):   # none idle
                self.crowded += 1
                if self.rng.random() < placed.full_share:
                    self._preempt(work)
                elif placed.late_wait_s:
                    job = [work, tag, callback, arg, self.env.now]
                    self.queued.append(job)
                    after(self.env, placed.late_wait_s, job, self._slice_ended)
                    return
            # else too few idle for it: its fair share
        super().run(work, tag, callback, arg)

    def _preempt(self, work: float) -> None:
        self.preempted += 1
        self.preempted_s += self._displace(min(work, self.placement.slice_s))

    def _slice_ended(self, ev) -> None:
        """A queued job's wait is over: it runs in place of the thread whose slice ended (on a
        core idle by then, it simply runs), unless a core freed first and it started there."""
        job = ev.value
        for i, queued in enumerate(self.queued):
            if queued is job:
                del self.queued[i]
                self._started_late(job)
                if self.demand >= self.total:
                    self._preempt(job[0])
                SharedProcessor.run(self, *job[:4])
                return

    def _started_late(self, job: list) -> None:
        self.late += 1
        self.late_s += self.env.now - job[4]

    def _finish(self, ev) -> None:
        current = ev is self._timer          # else a stale timer: nothing finished
        super()._finish(ev)
        queued = self.queued
        if not (current and queued and self._fits(queued[0][1])):
            return                           # nothing finished, nobody queued, or no core freed for the first
        self._finishing = True               # one timer for all that start, below
        try:
            while queued and self._fits(queued[0][1]):
                job = queued.pop(0)          # a core freed: the longest queued starts there at once
                self._started_late(job)
                SharedProcessor.run(self, *job[:4])
        finally:
            self._finishing = False
        self._schedule()

    def _fits(self, tag) -> bool:
        """Whether a job of ``tag`` finds its cores idle now."""
        return self.demand + (tag if type(tag) is int else 1) <= self.total

    def _displace(self, wait: float) -> float:
        """A running thread drawn at random stands still for ``wait``, then goes on."""
        after(self.env, wait, self.suspend(self._pick), self._resume)
        return wait

    def _pick(self, running: list) -> int:
        """A running thread drawn at random (a hand-off, weight 0, is not a thread computing)."""
        threads = [i for i, e in enumerate(running) if e[4] != 0]
        return threads[int(self.rng.random() * len(threads))]

    def _resume(self, ev) -> None:
        SharedProcessor.run(self, *ev.value)
