"""The load generator: Locust-style users, open-loop arrivals, or a replayed trace.

Users follow Locust's LoadTestShape semantics: when a stage begins, the runner moves the
user count toward the stage's target at ``spawn_rate`` users a second (the first at once,
then one every 1/spawn_rate s); a user sends a request as soon as it starts, then waits
uniform(wait_s) after each answer. Users are spread over the generator's worker processes
round-robin, as Locust's dispatcher does; each worker is one process, so the client CPU a
request needs (serialising the payload) queues behind the other users of that worker."""

from __future__ import annotations

from mmesim.workload import Workload, read_trace


class Worker:
    """One Locust worker process: a single CPU, first come first served."""

    __slots__ = ("free_at", "busy_s")

    def __init__(self):
        self.free_at = 0.0
        self.busy_s = 0.0

    def send(self, now: float, cost: float) -> float:
        """When a request that needs ``cost`` CPU-seconds leaves this worker."""
        start = self.free_at if self.free_at > now else now
        self.free_at = start + cost
        self.busy_s += cost
        return self.free_at


class Client:
    def __init__(self, sim, workload: Workload):
        self.sim, self.env, self.workload = sim, sim.env, workload
        gen = workload.generator
        self.workers = [Worker() for _ in range(gen.workers if gen else 1)]
        self.users_alive: list[list[bool]] = []   # one flag per started user; False = stop
        self.count = 0
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]
        self._ramp = 0

    def start(self) -> None:
        kind = self.workload.kind
        if kind == "users":
            self.env.process(self._shape())
        elif kind == "poisson":
            self.env.process(self._poisson())
        else:
            self.env.process(self._trace())

    # -- closed loop ---------------------------------------------------------------------
    def _shape(self):
        begin = 0.0
        for stage in self.workload.stages:
            self._ramp += 1
            self.env.process(self._move_to(stage.users, stage.spawn_rate, self._ramp))
            yield self.env.timeout(stage.end_s - begin)
            begin = stage.end_s

    def _move_to(self, target: int, rate: float, ramp: int):
        step = 1.0 / rate
        while self.count != target and ramp == self._ramp:
            if self.count < target:
                alive = [True]
                self.users_alive.append(alive)
                worker = self.workers[len(self.users_alive) % len(self.workers) - 1]
                self.env.process(self._user(alive, worker))
                self.count += 1
            else:
                for alive in reversed(self.users_alive):
                    if alive[0]:
                        alive[0] = False
                        break
                self.count -= 1
            self.timeline.append((self.env.now, self.count))
            yield self.env.timeout(step)

    def _user(self, alive: list[bool], worker: Worker):
        env, send, waits = self.env, self.sim.send, self.sim.waits
        lo, hi = self.workload.wait_s
        span = hi - lo
        pick = self.sim.pick_target
        while alive[0]:
            yield send(pick(), worker)
            if not alive[0]:
                break
            yield env.timeout(lo + span * waits.random())

    # -- open loop -----------------------------------------------------------------------
    def _poisson(self):
        env, send, pick, waits = self.env, self.sim.send, self.sim.pick_target, self.sim.waits
        i = 0
        for step in self.workload.rates:
            while True:
                if step.rate <= 0:
                    yield env.timeout(step.end_s - env.now)
                    break
                gap = waits.exponential(1.0 / step.rate)
                if env.now + gap >= step.end_s:
                    yield env.timeout(step.end_s - env.now)
                    break
                yield env.timeout(gap)
                send(pick(), self.workers[i % len(self.workers)])
                i += 1

    def _trace(self):
        env, send = self.env, self.sim.send
        by_name = {t.name: t for t in self.sim.targets}
        for i, (when, model) in enumerate(read_trace(self.workload.trace)):
            if when > env.now:
                yield env.timeout(when - env.now)
            send(by_name[model], self.workers[i % len(self.workers)])
