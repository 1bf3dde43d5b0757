"""SageMaker target-tracking autoscaling of the endpoint's instances (EndpointConfig.autoscaling).

Each period the metric gets one datapoint from in-service instances only. Target tracking's
two alarms decide: the high one (``scale_out_datapoints`` in a row above target) adds
instances, the low one (``scale_in_datapoints`` in a row under ``scale_in_ratio`` x target)
removes them, both to ceil(in service x metric / target) within [min, max] and outside their
cooldowns. A launched instance is billed at once and serves after ``startup_s``, empty: its
models load on their first requests, which is where SLO misses while scaling out come from.
Scale-in removes the newest instance first: it takes no new requests and finishes the ones
it holds."""

from __future__ import annotations

import math

from mmesim.endpoint import AutoScaling


class Autoscaler:
    def __init__(self, sim, policy: AutoScaling):
        self.sim, self.env, self.policy = sim, sim.env, policy
        self.launching = 0
        self.datapoints: list[tuple[float, float, int]] = []   # (period end, metric, in service)
        self.actions: list[tuple[float, str, int, int]] = []   # (time, "out"|"in", from, to) desired capacity
        self._last_out = self._last_in = -math.inf
        self._answered = 0
        self._busy: dict[int, float] = {}

    @property
    def provisioned(self) -> int:
        return len(self.sim.routable) + self.launching

    def _note(self) -> None:
        self.sim.instance_timeline.append((self.env.now, self.provisioned, len(self.sim.routable)))

    def start(self) -> None:
        self._note()
        self.env.process(self._run())

    def _metric(self) -> float:
        sim, p = self.sim, self.policy
        serving = sim.routable
        if p.metric == "InvocationsPerInstance":
            answered = len(sim.records)
            value = (answered - self._answered) / len(serving) * (60.0 / p.period_s)
            self._answered = answered
            return value
        busy = {i.index: i.gpu.busy_until_now() for i in sim.instances}
        share = [(busy[i.index] - self._busy.get(i.index, 0.0)) / p.period_s for i in serving]
        self._busy = busy
        return 100.0 * sum(share) / len(share)

    def _run(self):
        p = self.policy
        while True:
            yield self.env.timeout(p.period_s)
            now = self.env.now
            serving = len(self.sim.routable)
            value = self._metric()
            self.datapoints.append((now, value, serving))
            desired = min(p.max_instances, max(p.min_instances, math.ceil(serving * value / p.target - 1e-9)))
            recent = [v for _, v, _ in self.datapoints]
            high = len(recent) >= p.scale_out_datapoints and all(v > p.target for v in recent[-p.scale_out_datapoints:])
            low = len(recent) >= p.scale_in_datapoints and all(
                v < p.scale_in_ratio * p.target for v in recent[-p.scale_in_datapoints:])
            if high and desired > self.provisioned and now - self._last_out >= p.scale_out_cooldown_s:
                self._scale_out(desired - self.provisioned)
            elif low and desired < self.provisioned and now - self._last_in >= p.scale_in_cooldown_s:
                self._scale_in(self.provisioned - desired)

    def _scale_out(self, n: int) -> None:
        self.actions.append((self.env.now, "out", self.provisioned, self.provisioned + n))
        self._last_out = self.env.now
        self.launching += n
        self._note()
        for _ in range(n):
            self.env.process(self._launch())

    def _launch(self):
        yield self.env.timeout(self.policy.startup_s)
        self.launching -= 1
        self.sim.add_instance()
        self._note()

    def _scale_in(self, n: int) -> None:
        self.actions.append((self.env.now, "in", self.provisioned, self.provisioned - n))
        self._last_in = self.env.now
        for _ in range(n):
            if len(self.sim.routable) > 1:
                self.sim.routable.pop()      # the newest: no new requests; it finishes what it holds
        self._note()
