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
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from mmesim.errors import ConfigError
from mmesim.serde import Model, load


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
        return self


class LoadGenerator(Model):
    """The client side: Locust worker processes and what each request costs them in CPU.

    A Locust worker is one process: users on it share one core, so the CPU a request takes
    on the client (json.dumps of the payload, SigV4 hashing of the body, parsing the reply)
    queues behind the other users of the same worker."""

    workers: int = Field(default=1, ge=1)
    cpu_s_per_request: float = Field(default=0.0, ge=0)
    cpu_s_per_byte: float = Field(default=0.0, ge=0, description="per request payload byte")
    on_host: bool = Field(default=False,
                          description="the generator runs on the endpoint's host and shares its cores (instance "
                                      "type local, CPU only; on a GPU instance type it is taken to run elsewhere)")


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
    user_steps: list[int] = Field(default_factory=list,
                                  description="user counts the reference's metrics are taken at")
    _source: str | None = PrivateAttr(default=None)      # the file it was read from, for errors

    def check_profiles(self, names) -> None:
        """Fail before anything runs if mix weights name a profile the endpoint lacks."""
        names = set(names)
        unknown = set(self.popularity.weights) - names if self.popularity.kind == "mix" else set()
        if unknown:
            raise ConfigError(f"mix weights name profiles not in the endpoint ({', '.join(sorted(names))})",
                              source=self._source or "workload", field="popularity.weights", value=sorted(unknown))

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


def read_trace(path: str | Path) -> list[tuple[float, str]]:
    """Rows (timestamp, model) sorted by time; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("trace file not found", source=str(path))
    rows: list[tuple[float, str]] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"timestamp", "model"} <= set(reader.fieldnames):
                raise ConfigError(f"needs columns 'timestamp' and 'model', has {reader.fieldnames}", source=str(path))
            for line, row in enumerate(reader, start=2):
                try:
                    t = float(row["timestamp"])
                except (TypeError, ValueError):
                    raise ConfigError("timestamp is not a number", source=f"{path}:{line}", field="timestamp",
                                      value=row["timestamp"]) from None
                if t < 0 or not row["model"]:
                    raise ConfigError("needs a timestamp >= 0 and a model", source=f"{path}:{line}",
                                      field="timestamp" if t < 0 else "model", value=row["model"] if t >= 0 else t)
                rows.append((t, row["model"]))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x}", source=str(path)) from None
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
    if wl.trace and not Path(wl.trace).is_absolute():
        wl.trace = str((path.parent / wl.trace).resolve())
    return wl
