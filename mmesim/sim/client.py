"""The load generator: Locust-style users, open-loop arrivals, or a replayed trace.

Users follow Locust's LoadTestShape semantics: the user count moves in batches as Locust's
dispatcher moves it (one rule, ``mmesim.dispatch.user_timeline``, shared with the real load
test); a user sends a request as soon as it starts, then waits uniform(wait_s) after each
answer. Users are spread over the generator's worker processes
round-robin, as Locust's dispatcher does; each worker is one process, so the client CPU a
request needs (serialising the payload) queues behind the other users of that worker.
The part of that CPU outside the request's timer (``generator.timed_share``) runs after a
closed-loop user's answer and before its wait: it is not latency but it delays the user's
next request (open-loop arrivals do not wait for it). A request's CPU follows its worker's
pace (``generator.by_idle``: the idle since the worker last sent a request or got an answer;
open-loop arrivals count sends only), and each worker spends ``background_cpu_s_per_s`` once
a second, as Locust's statistics do. When the generator runs on the CPU-only host it loads
(``generator.on_host`` on instance type local), each worker's work also takes its turn on
that host's shared cores."""

from __future__ import annotations

import math
from collections import deque

from mmesim.dispatch import user_timeline
from mmesim.sim.events import after, nothing
from mmesim.workload import Workload


class Worker:
    """One Locust worker process: a single CPU, first come first served; on the endpoint's
    own host (``cores``), one core of its shared pool at a time. ``pace``: a request's CPU
    after the process idled so long (``LoadGenerator.paced``), None: the same at any pace."""

    __slots__ = ("free_at", "busy_s", "cores", "pace", "last", "_queue", "_running")

    def __init__(self, cores=None, pace=None):
        self.free_at = 0.0
        self.busy_s = 0.0
        self.cores = cores
        self.pace = pace
        self.last = -math.inf        # when it last sent a request or received an answer
        self._queue: deque = deque()
        self._running = False

    def paced(self, now: float) -> tuple[float, float]:
        """A request sent now: (its timed CPU over the generator's, its CPU after the answer),
        by the process's idle since it last sent a request or got an answer (the first one's
        idle is endless: the curve's far end)."""
        costs = self.pace(now - self.last)
        self.last = now
        return costs

    def send(self, now: float, cost: float) -> float:
        """When a request that needs ``cost`` CPU-seconds leaves this worker."""
        start = self.free_at if self.free_at > now else now
        self.free_at = start + cost
        self.busy_s += cost
        return self.free_at

    def submit(self, cost: float, callback, arg) -> None:
        """On shared cores: run ``cost`` CPU-seconds after this worker's earlier work, then
        ``callback(arg)``."""
        self.busy_s += cost
        self._queue.append((cost, callback, arg))
        if not self._running:
            self._next()

    def _next(self) -> None:
        self._running = True
        self.cores.run(self._queue[0][0], 1, self._done, None)

    def _done(self, _) -> None:
        _, callback, arg = self._queue.popleft()
        self._running = False
        if self._queue:
            self._next()
        callback(arg)


class User:
    """One Locust user: its worker process, whether it still runs, and the CPU its last
    request needs after the answer where the generator has it by pace."""

    __slots__ = ("alive", "worker", "untimed")

    def __init__(self, worker: Worker):
        self.alive = True
        self.worker = worker
        self.untimed = 0.0


class Client:
    """Drives the endpoint. Closed-loop users are callback chains rather than processes:
    when a user's answer arrives, its next request is scheduled at answer + wait, one
    event per request (the simulator's hottest path)."""

    def __init__(self, sim, workload: Workload):
        self.sim, self.env, self.workload = sim, sim.env, workload
        gen = workload.generator
        cores = sim.instances[0].cores if gen is not None and gen.on_host else None
        pace = gen.paced if gen is not None and gen.by_idle else None
        self.workers = [Worker(cores, pace) for _ in range(gen.workers if gen else 1)]
        self._paced = pace is not None
        self._background = gen.background_cpu_s_per_s if gen else 0.0
        self.users: list[User] = []
        self.count = 0
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]
        # a Locust master (several workers) blocks while ramping; one process does not
        self.distributed = bool(gen and gen.workers > 1)
        lo, hi = workload.wait_s
        self._wait_lo, self._wait_span = lo + (gen.wait_slack_s if gen else 0.0), hi - lo
        self._untimed = gen.untimed_cpu_s_per_request if gen else 0.0

    def start(self) -> None:
        if self._background:
            for worker in self.workers:
                after(self.env, 1.0, worker, self._tick)
        kind = self.workload.kind
        if kind == "users":
            self.env.process(self._shape())
        elif kind == "poisson":
            self._steps = iter(self.workload.rates)
            self._step = next(self._steps)
            self._sent = 0
            self._next_arrival()
        else:
            self._sent = 0
            self._trace_next(None)

    # -- closed loop ---------------------------------------------------------------------
    def _shape(self):
        """Move the user count as Locust's dispatcher does (mmesim.dispatch.user_timeline)."""
        for when, target in user_timeline(self.workload.stages, distributed=self.distributed):
            if when > self.env.now:
                yield self.env.timeout(when - self.env.now)
            while self.count < target:
                user = User(self.workers[len(self.users) % len(self.workers)])
                self.users.append(user)
                self.sim.send(self.sim.pick_target(), user.worker, user)   # a user starts with a request
                self.count += 1
            while self.count > target:                                      # last started, first stopped
                for user in reversed(self.users):
                    if user.alive:
                        user.alive = False
                        break
                self.count -= 1
            if self.timeline[-1][0] == self.env.now:
                self.timeline[-1] = (self.env.now, self.count)
            else:
                self.timeline.append((self.env.now, self.count))

    def answered(self, user: User, delay: float) -> None:
        """``user`` has its answer ``delay`` seconds from now; it waits, then asks again."""
        if not user.alive:
            return
        if self._untimed or self._paced:   # the client records the answer first (outside its timer)
            after(self.env, delay, user, self._record)
            return
        wait = self._wait_lo + self._wait_span * self.sim.waits.random()
        after(self.env, delay + wait, user, self._again)

    def _record(self, ev) -> None:
        user = ev.value
        worker = user.worker
        cost = self._untimed
        if self._paced:
            cost = user.untimed
            worker.last = self.env.now      # an answer is the process's event too
        if not cost:
            self._recorded(user)
        elif worker.cores is not None:
            worker.submit(cost, self._recorded, user)
        else:
            now = self.env.now
            self._recorded(user, worker.send(now, cost) - now)

    def _recorded(self, user: User, after_s: float = 0.0) -> None:
        wait = self._wait_lo + self._wait_span * self.sim.waits.random()
        after(self.env, after_s + wait, user, self._again)

    def _again(self, ev) -> None:
        user = ev.value
        if user.alive:
            self.sim.send(self.sim.pick_target(), user.worker, user)

    def _tick(self, ev) -> None:
        """A second of the process's own work (its statistics), whatever it sends."""
        worker = ev.value
        if worker.cores is not None:
            worker.submit(self._background, nothing, None)
        else:
            worker.send(self.env.now, self._background)
        after(self.env, 1.0, worker, self._tick)

    # -- open loop: chains of timer callbacks, one event per request, no process to resume
    def _next_arrival(self) -> None:
        """Poisson arrivals at the current step's rate: the next one, or the step's end."""
        env, step = self.env, self._step
        if step.rate > 0:
            gap = self.sim.waits.exponential(1.0 / step.rate)
            if env.now + gap < step.end_s:
                after(env, gap, None, self._poisson_arrival)
                return
        after(env, step.end_s - env.now, None, self._step_end)

    def _poisson_arrival(self, _ev) -> None:
        i = self._sent
        self.sim.send(self.sim.pick_target(), self.workers[i % len(self.workers)])
        self._sent = i + 1
        self._next_arrival()

    def _step_end(self, _ev) -> None:
        self._step = next(self._steps, None)
        if self._step is not None:
            self._next_arrival()

    def _trace_next(self, _ev) -> None:
        """Send the trace's requests due now, then wait for the next one's time."""
        env, trace, i = self.env, self.sim.trace, self._sent
        while i < len(trace):
            when, target = trace[i]
            if when > env.now:
                after(env, when - env.now, None, self._trace_next)
                break
            self.sim.send(target, self.workers[i % len(self.workers)])
            i += 1
        self._sent = i

