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
show where that stops: Triton's trace on a 2-vCPU VM (README, "Inside the server") has
one-thread executions that overlapped another run 1.4 times as long on average as those
alone, with a core to spare; the median is right, the tail is not (p95 about 10-20 % short).
That VM often runs two threads woken together on one vCPU, and halts idle ones
(examples/host_wakeups.py measures a host's placement without Triton); processor sharing is
the model of a host that does not.

Core-seconds used (min(N, D) over time) are CloudWatch's CPUUtilization on this host."""

from __future__ import annotations

from mmesim.profile import ModelProfile
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
