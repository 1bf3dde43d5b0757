"""Workload: who sends what, and when.

One Workload drives the simulator, the Locust load test and a live validation, so a
prediction and a measurement are comparable by construction. Three shapes:

- ``users``: closed-loop users with Locust stage semantics (a stage ends at ``end_s``; the
  runner moves the user count toward ``users`` at ``spawn_rate`` per second) and a wait time
  uniform(wait_s) between one user's requests;
- ``poisson``: open-loop arrivals at a rate, or a schedule of rates;
- ``trace``: replay of a CSV file with columns ``timestamp`` (seconds) and ``model``.

The load generator itself can be part of the system: Locust workers are single processes,
so serialising a large JSON payload on the client is queueing the simulator must see.
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mmesim.errors import ConfigError
from mmesim.profile import _between, _sorted_by
from mmesim.serde import Model, check_file, load


class Stage(Model):
    end_s: float = Field(gt=0, description="the stage lasts until this time since the test began")
    users: int = Field(ge=0)
    spawn_rate: float = Field(gt=0, description="users started (or stopped) per second")


class RateStep(Model):
    end_s: float = Field(gt=0)
    rate: float = Field(ge=0, description="requests per second")


class Popularity(Model):
    """Which target each request goes to."""

    kind: Literal["uniform", "zipf", "top-n", "mix"] = "uniform"
    s: float = Field(default=1.0, gt=0, description="zipf exponent")
    n: int | None = Field(default=None, ge=1, description="top-n: how many targets are hot")
    share: float = Field(default=0.8, gt=0, le=1, description="top-n: share of requests to the hot ones")
    weights: dict[str, float] = Field(default_factory=dict,
                                      description="mix: profile name -> share of requests")

    @model_validator(mode="after")
    def _complete(self) -> "Popularity":
        if self.kind == "top-n" and self.n is None:
            raise ValueError("top-n popularity needs n")
        if self.kind == "mix":
            if not self.weights:
                raise ValueError("mix popularity needs weights (profile name -> weight)")
            bad = {k: w for k, w in self.weights.items() if w < 0}
            if bad or sum(self.weights.values()) <= 0:
                raise ValueError(f"mix weights must be >= 0 and not all 0: {self.weights}")
        elif self.weights:
            raise ValueError(f"weights apply to kind: mix only (kind is {self.kind})")
        if self.kind != "top-n" and self.n is not None:
            raise ValueError(f"n applies to kind: top-n only (kind is {self.kind})")
        return self


class ClientPace(Model):
    """What a request costs the client's process in CPU after it idled ``idle_s`` seconds
    (since it last sent a request or received an answer), and the share of it inside the
    request's timer there (None: the generator's ``timed_share``)."""

    idle_s: float = Field(gt=0)
    cpu_s_per_request: float = Field(ge=0)
    timed_share: float | None = Field(default=None, ge=0, le=1)


class LoadGenerator(Model):
    """The client side: Locust worker processes and what each request costs them in CPU.

    A Locust worker is one process: users on it share one core, so the CPU a request takes
    on the client (json.dumps of the payload, SigV4 hashing of the body, parsing the reply)
    queues behind the other users of the same worker.

    Only part of it is inside the request's own timer (``timed_share``: building the body,
    sending, reading the answer; the per-byte cost is all inside); the rest (recording the
    result, Locust's statistics, scheduling the user's next request) comes after the answer:
    not latency, but it delays that user's next request and takes CPU from everyone else.
    Each client has its own share: `mmesim loadtest` measures it at one request in flight.

    A user's wait is longer than the one it asks for: gevent wakes a sleeping greenlet late
    (measured here: 0.6 ms on average for waits of 0-10 ms, idle host). On waits of
    hundreds of ms that is nothing; on short requests with short waits it is several percent
    of a cycle, and throughput (``wait_slack_s``, measured by the same probe).

    A request's CPU depends on the process's pace (``by_idle``): a Locust process kept busy by
    several users spends less per request than one that sleeps between requests, as a cold
    model does (this AMD EPYC VM, 2026-12-06, against Triton on the same cores: FastHttpUser
    0.22-0.32 ms a request after 0.8-1.0 ms of idle, 0.53-0.60 after 6 ms, up to 0.77 after a
    quarter second; python-requests 0.80-0.99, 1.45-1.49, up to 1.88): each wake-up from
    epoll is a switch into a process whose caches the server's threads have used meanwhile,
    and a busy process finds several answers per wake-up. Apart from its requests, the
    process spends CPU every second (``background_cpu_s_per_s``, 10-15 ms there: Locust's
    statistics, the CSV rows flushed each second, gevent's hub), which a slow test pays many
    times per request. ``mmesim.loadtest.probe.measure_client`` (``mmesim loadtest
    --measure-client``) measures both."""

    workers: int = Field(default=1, ge=1)
    cpu_s_per_request: float = Field(default=0.0, ge=0)
    cpu_s_per_byte: float = Field(default=0.0, ge=0, description="per request payload byte")
    timed_share: float = Field(default=1.0, ge=0, le=1,
                               description="share of cpu_s_per_request inside the client's timer (the rest "
                                           "follows the answer: a closed-loop user's next request waits for it)")
    wait_slack_s: float = Field(default=0.0, ge=0,
                                description="a closed-loop user's time between an answer and its next request beyond "
                                            "the wait asked and the client's CPU outside its timer: its timer's late "
                                            "wake-ups")
    by_idle: list[ClientPace] = Field(
        default_factory=list,
        description="a request's CPU and its timed share after each idle of the process (linear in log idle "
                    "between points, the nearest end's beyond; empty: cpu_s_per_request and timed_share at "
                    "every pace)")
    background_cpu_s_per_s: float = Field(default=0.0, ge=0, le=1,
                                          description="each worker process's CPU per second whatever it sends "
                                                      "(charged once a second)")
    on_host: bool = Field(default=False,
                          description="the generator runs on the endpoint's host and shares its cores (instance "
                                      "type local, CPU only; on a GPU instance type it is taken to run elsewhere)")

    @field_validator("by_idle")
    @classmethod
    def _by_idle_sorted(cls, v):
        return _sorted_by(v, "idle_s", "by_idle idle_s values repeat")

    @model_validator(mode="after")
    def _pace_scales_a_cost(self) -> "LoadGenerator":
        if self.by_idle and self.cpu_s_per_request <= 0:
            raise ValueError("by_idle scales cpu_s_per_request, which is 0")
        return self

    def paced(self, idle_s: float) -> tuple[float, float]:
        """A request's CPU after the process idled ``idle_s`` seconds: (its timed part over
        the generator's, its CPU after the answer in seconds). Linear in log idle between
        points, the nearest end's beyond them (a cache cools over several time scales: of what
        this VM's clients spent more per request after 250 ms of idle than after 6 ms,
        python-requests spent two thirds or more and FastHttpUser a third by 20 ms, where a
        line in idle puts less than a tenth). Without a timed part to scale (``timed_share``
        0) the timed cost stays the generator's."""
        cpu, share = self._at(idle_s)
        timed = self.timed_cpu_s_per_request
        return (cpu * share / timed if timed else 1.0), cpu * (1 - share)

    def _at(self, idle_s: float) -> tuple[float, float]:
        """(CPU per request, timed share) after ``idle_s`` of idle, from ``by_idle``."""
        pts = self.by_idle
        share = lambda p: self.timed_share if p.timed_share is None else p.timed_share  # noqa: E731
        return (_between(pts, idle_s, "cpu_s_per_request", self.cpu_s_per_request, log=True),
                _between(pts, idle_s, share, self.timed_share, log=True))

    @property
    def timed_cpu_s_per_request(self) -> float:
        return self.cpu_s_per_request * self.timed_share

    @property
    def untimed_cpu_s_per_request(self) -> float:
        return self.cpu_s_per_request - self.timed_cpu_s_per_request


class Workload(Model):
    name: str = "custom"
    kind: Literal["users", "poisson", "trace"] = "users"
    stages: list[Stage] = Field(default_factory=list)
    wait_s: tuple[float, float] = (0.05, 0.5)
    rates: list[RateStep] = Field(default_factory=list)
    trace: str | None = Field(default=None, description="CSV path: timestamp,model")
    popularity: Popularity = Field(default_factory=Popularity)
    payload_bytes: int | None = Field(default=None, gt=0, description="default: the profile's input_bytes")
    generator: LoadGenerator | None = Field(default=None, description="None: an ideal client")
    user_steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list,
                                                          description="user counts the reference's metrics are "
                                                                      "taken at")
    _source: str | None = PrivateAttr(default=None)      # the file it was read from, for errors

    def check_profiles(self, names) -> list[str]:
        """Fail before anything runs if mix weights name a profile the endpoint lacks; return
        the endpoint's profiles they leave out (weight 0: loaded if they fit, never asked for),
        which a run reports, since a typo in a name looks the same."""
        names = set(names)
        if self.popularity.kind != "mix":
            return []
        unknown = set(self.popularity.weights) - names
        if unknown:
            raise ConfigError(f"mix weights name profiles not in the endpoint ({', '.join(sorted(names))})",
                              source=self._source or "workload", field="popularity.weights", value=sorted(unknown))
        return sorted(names - set(self.popularity.weights))

    @model_validator(mode="after")
    def _shape(self) -> "Workload":
        if self.wait_s[0] < 0 or self.wait_s[1] < self.wait_s[0]:
            raise ValueError(f"wait_s must be (min, max) with 0 <= min <= max, got {self.wait_s}")
        if self.kind == "users" and not self.stages:
            raise ValueError("a users workload needs stages")
        if self.kind == "poisson" and not self.rates:
            raise ValueError("a poisson workload needs rates")
        if self.kind == "trace" and not self.trace:
            raise ValueError("a trace workload needs a trace file")
        other = [name for name, given in (("stages", self.stages), ("rates", self.rates), ("trace", self.trace))
                 if given and name != {"users": "stages", "poisson": "rates", "trace": "trace"}[self.kind]]
        if other:
            raise ValueError(f"{' and '.join(other)} do not apply to a {self.kind} workload (check kind)")
        for name, steps in (("stages", self.stages), ("rates", self.rates)):
            ends = [s.end_s for s in steps]
            if ends != sorted(set(ends)):
                raise ValueError(f"{name} must end at strictly increasing times, got {ends}")
        return self

    @property
    def duration_s(self) -> float:
        if self.kind == "users":
            return self.stages[-1].end_s
        if self.kind == "poisson":
            return self.rates[-1].end_s
        return max((t for t, _ in read_trace(self.trace)), default=0.0) + 1.0


def read_trace(path: str | Path, targets=None) -> list[tuple[float, str]]:
    """Rows (timestamp, model) sorted by time (a trace need not be written in order); every
    line is checked and an error names the file and the line. ``targets``: the names the
    endpoint serves, when known; a model not among them is an error too."""
    path = check_file(path, "trace file")
    rows: list[tuple[float, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:      # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(fh)
            names = [f.strip() for f in reader.fieldnames or []]
            if not {"timestamp", "model"} <= set(names):
                raise ConfigError(f"needs a header with columns 'timestamp' and 'model', has {names or 'none'}",
                                  source=str(path))
            reader.fieldnames = names
            for row in reader:
                where = f"{path}:{reader.line_num}"
                try:
                    t = float(row["timestamp"])
                except (TypeError, ValueError):
                    raise ConfigError("timestamp is not a number", source=where, field="timestamp",
                                      value=row["timestamp"]) from None
                if not math.isfinite(t) or t < 0:
                    raise ConfigError("timestamp must be a number of seconds >= 0", source=where,
                                      field="timestamp", value=row["timestamp"])
                model = (row["model"] or "").strip()
                if not model:
                    raise ConfigError("no model on this line", source=where, field="model")
                if targets is not None and model not in targets:
                    shown = ", ".join(sorted(targets)[:5]) + ("..." if len(targets) > 5 else "")
                    raise ConfigError(f"model is not a target of this endpoint (targets: {shown})", source=where,
                                      field="model", value=model)
                rows.append((t, model))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x}", source=str(path)) from None
    if not rows:
        raise ConfigError("holds no requests (a header and no rows)", source=str(path))
    rows.sort(key=lambda r: r[0])
    return rows


def builtin_workloads() -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(str(resources.files("mmesim.workloads"))).glob("*.yaml"))}


def load_workload(name_or_path: str | Path) -> Workload:
    """A built-in name (``blog``) or a path to a YAML/JSON workload file."""
    known = builtin_workloads()
    path = Path(known.get(str(name_or_path), name_or_path))
    if not path.exists():
        raise ConfigError(f"no built-in workload of that name and no such file; built-in: {', '.join(known)}",
                          field="workload", value=str(name_or_path))
    wl = load(Workload, path)
    wl._source = str(path)
    if (wl.kind == "users" and not any(s.users for s in wl.stages)) or \
            (wl.kind == "poisson" and not any(r.rate for r in wl.rates)):      # (a probe may; a file may not)
        raise ConfigError("the workload sends no requests", source=str(path),
                          field="stages[].users" if wl.kind == "users" else "rates[].rate", value=0)
    if wl.trace and not Path(wl.trace).is_absolute():
        wl.trace = str((path.parent / wl.trace).resolve())
    return wl
