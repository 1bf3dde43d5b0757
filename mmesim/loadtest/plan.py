"""A load test's plan: everything the Locust processes need, worked out once from the
Workload, the profiles and the copies, and handed to them as one JSON file.

Targets are the simulator's (``mmesim.sim.mme.target_names``) with the simulator's
popularity weights (``popularity_weights``), so a prediction and a measurement send the
same requests to the same names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.loadtest.payload import Payload, model_inputs
from mmesim.profile import ModelProfile
from mmesim.sim.mme import popularity_weights, target_names
from mmesim.workload import Stage, Workload, read_trace

PROTOCOLS = ("sagemaker", "triton")
CLIENTS = ("http", "fast")        # python-requests or boto3 | Locust's FastHttpUser (geventhttpclient)


@dataclass
class Plan:
    endpoint_url: str
    endpoint_name: str | None
    protocol: str
    payload_format: str
    kind: str
    targets: list[dict]                       # name, request_name, weight, payload (index into inputs)
    inputs: list[list[str]]                   # per profile: NAME:DTYPE:D1,D2 of each tensor
    log_dir: str
    stages: list[dict] = field(default_factory=list)
    wait_s: tuple[float, float] = (0.05, 0.5)
    rates: list[dict] = field(default_factory=list)
    trace: list[tuple[float, str]] = field(default_factory=list)
    duration_s: float = 0.0
    processes: int = 1                        # Locust processes sending requests
    seed: int = 0
    timeout_s: float = 60.0
    aws: dict = field(default_factory=dict)
    client: str = "http"

    @property
    def stages_typed(self) -> list[Stage]:
        if not hasattr(self, "_stages"):
            self._stages = [Stage(**s) for s in self.stages]
        return self._stages

    def payloads(self) -> list[Payload]:
        from mmesim.triton.modelspec import TensorSpec
        return [Payload(tuple(TensorSpec.parse(t) for t in tensors), self.payload_format, self.seed)
                for tensors in self.inputs]

    def write(self, path: Path) -> Path:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> "Plan":
        return cls(**json.loads(Path(path).read_text()))


def check_endpoint(endpoint_url: str, endpoint_name: str | None, protocol: str = "sagemaker",
                   workers: int = 0, client: str = "http") -> None:
    """What a load test sends to, checked before anything starts: an http(s) URL with a host,
    a known protocol and client, an endpoint name for SageMaker's, a worker count >= 0."""
    from urllib.parse import urlsplit
    if protocol not in PROTOCOLS:
        raise ConfigError(f"use one of {', '.join(PROTOCOLS)}", field="protocol", value=protocol)
    if client not in CLIENTS:
        raise ConfigError(f"use one of {', '.join(CLIENTS)}", field="client", value=client)
    try:
        url = urlsplit(endpoint_url)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and (url.port is None or url.port > 0)
    except (TypeError, ValueError):          # a port that is no number, or out of range
        ok = False
    if not ok:
        raise ConfigError("expected http(s)://HOST[:PORT]", field="--endpoint-url", value=endpoint_url)
    if protocol == "sagemaker" and not endpoint_name:
        raise ConfigError("the sagemaker protocol needs an endpoint name (--endpoint-name)", field="endpoint_name")
    if workers < 0:
        raise ConfigError("Locust worker processes: 0 (one local process) or more", field="--workers", value=workers)


def check_targets(workload: Workload, profiles: list[ModelProfile], copies: list[int]):
    """The requests' targets: (name, profile index, request name) per copy, their weights and
    the trace, with the copies, the mix and every trace line checked against them (before a
    live endpoint is paid for, too)."""
    if len(copies) != len(profiles) or any(c < 1 for c in copies):
        raise ConfigError(f"one copy count >= 1 per profile is needed ({len(profiles)} profiles)", field="copies",
                          value=list(copies))
    workload.check_profiles(p.name for p in profiles)
    names = target_names(profiles, copies)
    weights = popularity_weights(workload.popularity, [profiles[pi].name for _, pi, _ in names])
    trace = read_trace(workload.trace, targets={n for n, _, _ in names}) if workload.kind == "trace" else []
    return names, weights, trace


def make_plan(endpoint_url: str, endpoint_name: str | None, workload: Workload, profiles: list[ModelProfile],
              copies: list[int], log_dir: Path, *, processes: int = 1, protocol: str = "sagemaker",
              payload: str = "json", inputs: list[list[str]] | None = None, seed: int = 0,
              timeout_s: float = 60.0, aws: dict | None = None, client: str = "http") -> Plan:
    check_endpoint(endpoint_url, endpoint_name, protocol, client=client)
    names, weights, trace = check_targets(workload, profiles, copies)
    tensors = []
    for i, p in enumerate(profiles):
        specs = model_inputs(p, inputs[i] if inputs and i < len(inputs) else None)
        tensors.append([f"{t.name}:{t.dtype}:{','.join(map(str, t.dims))}" for t in specs])
    return Plan(
        endpoint_url=endpoint_url, endpoint_name=endpoint_name, protocol=protocol, payload_format=payload,
        kind=workload.kind, log_dir=str(log_dir),
        targets=[{"name": n, "request_name": rn, "weight": w, "payload": pi} for (n, pi, rn), w in zip(names, weights)],
        inputs=tensors, stages=[s.model_dump() for s in workload.stages], wait_s=tuple(workload.wait_s),
        rates=[r.model_dump() for r in workload.rates], trace=trace, duration_s=workload.duration_s,
        processes=max(1, processes), seed=seed, timeout_s=timeout_s, aws=dict(aws or {}), client=client)
