"""PlanMix: what `mmesim plan` is asked. Models (a profile per framework, copies or tenants,
traffic share), traffic (peak requests/s or users, a daily pattern, or a trace), SLOs, the
candidates to search (instance types, frameworks, memory thresholds), a budget, and the
endpoint settings every candidate shares (timeouts, an autoscaling policy).

A bad file stops with one line naming the file, the field and the value."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmesim.catalog import load_catalog
from mmesim.endpoint import EndpointConfig
from mmesim.errors import ConfigError
from mmesim.profile import Framework, ModelProfile, load_profile
from mmesim.serde import Model, read_data, validate

HOURS_PER_MONTH = 730.0   # AWS's convention for monthly prices


class ModelGroup(Model):
    """Copies of one model (fine-tuned variants, or one per tenant) and their traffic share.
    ``profiles`` maps a framework to a profile name or path, or to several (one per GPU: the
    one made on the instance's GPU is used, else the first is translated)."""

    name: str = Field(min_length=1)
    profiles: dict[str, str | list[str]] = Field(min_length=1)
    copies: int = Field(ge=1)
    share: float = Field(gt=0, description="share of requests (normalised over the groups)")
    popularity: Literal["uniform", "zipf"] = "zipf"
    s: float = Field(default=1.0, gt=0, description="zipf exponent within the group")

    @model_validator(mode="before")
    @classmethod
    def _one_profile(cls, data):
        if isinstance(data, dict) and "profile" in data:
            data = dict(data)
            one = data.pop("profile")
            if "profiles" in data:
                raise ValueError("give 'profile' or 'profiles', not both")
            data["profiles"] = {"*": one}
        return data

    @field_validator("profiles")
    @classmethod
    def _as_lists(cls, v: dict) -> dict:
        return {k: ([p] if isinstance(p, str) else p) for k, p in v.items()}


class Traffic(Model):
    peak_rps: float | None = Field(default=None, gt=0, description="open-loop Poisson arrivals at the peak")
    users: int | None = Field(default=None, ge=1, description="or closed-loop users at the peak")
    wait_s: tuple[float, float] = (0.05, 0.5)
    daily: list[float] | None = Field(default=None, description="24 hourly multipliers of the peak (max 1)")
    trace: str | None = Field(default=None, description="or a CSV trace timestamp,model (target names <model>-v<i>)")
    payload_bytes: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_shape(self) -> "Traffic":
        given = [k for k in ("peak_rps", "users", "trace") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of peak_rps, users, trace (given: {', '.join(given) or 'none'})")
        if self.daily is not None and (len(self.daily) != 24 or min(self.daily) < 0 or max(self.daily) > 1
                                       or max(self.daily) <= 0):
            raise ValueError("daily needs 24 multipliers in [0, 1], the peak hour at most 1")
        return self

    @property
    def mean_multiplier(self) -> float:
        return sum(self.daily) / 24 if self.daily else 1.0


class SLO(Model):
    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    max_error_rate: float = Field(default=0.001, ge=0, le=1, description="failed requests as a fraction")
    max_cold_start_share: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _percent(cls, data):
        """``max_error_percent: 0.1`` is ``max_error_rate: 0.001``."""
        if isinstance(data, dict) and "max_error_percent" in data:
            data = dict(data)
            if "max_error_rate" in data:
                raise ValueError("give max_error_rate or max_error_percent, not both")
            pct = data.pop("max_error_percent")
            if not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
                raise ValueError(f"max_error_percent must be a number in [0, 100], got {pct!r}")
            data["max_error_rate"] = pct / 100
        return data


class Candidates(Model):
    instance_types: list[str] | None = Field(default=None, description="default: every catalogue type the models fit "
                                             "(MME-eligible ones unless mme_eligible_only is false)")
    frameworks: list[Framework] | None = Field(default=None, description="default: every framework the profiles give")
    memory_thresholds: list[float] = Field(default_factory=lambda: [0.9])
    max_batch_sizes: list[int] | None = Field(default=None, description="Triton max_batch_size values to try, "
                                              "each capped at a profile's own (its timings stop there); "
                                              "default: the profiles' own")
    triton_instances: list[int] | None = Field(default=None, description="Triton instance_group counts to try "
                                               "(each instance holds its own copy of the model); default: "
                                               "the profiles' own")
    max_instances: int = Field(default=16, ge=1)
    mme_eligible_only: bool = Field(default=True, description="search only the instance types SageMaker documents "
                                    "for GPU multi-model endpoints (the catalogue's mme_support); false: any type, "
                                    "e.g. to ask what an ineligible one would do")

    @field_validator("instance_types")
    @classmethod
    def _known(cls, v):
        if v is not None:
            catalog = load_catalog()
            unknown = [n for n in v if ("" if n.startswith("ml.") else "ml.") + n not in catalog.instances]
            if unknown:
                raise ValueError(f"unknown instance type(s) {unknown} (`mmesim instances` lists them)")
            return [catalog.instance(name).name for name in v]
        return v

    @field_validator("max_batch_sizes", "triton_instances")
    @classmethod
    def _positive(cls, v):
        if v is not None and (not v or min(v) < 1):
            raise ValueError(f"give whole numbers of at least 1, got {v}")
        return v

    @field_validator("memory_thresholds")
    @classmethod
    def _in_range(cls, v):
        bad = [t for t in v if not 0 < t <= 1]
        if bad or not v:
            raise ValueError(f"thresholds must be in (0, 1], got {v}")
        return v


class Simulation(Model):
    duration_s: float = Field(default=90.0, gt=0, description="simulated seconds per evaluation")
    warmup_s: float = Field(default=30.0, ge=0, description="requests started before this are not judged")
    seed: int = Field(default=0, ge=0)


class PlanMix(Model):
    name: str = "plan"
    models: list[ModelGroup] = Field(min_length=1)
    traffic: Traffic
    slo: SLO
    candidates: Candidates = Field(default_factory=Candidates)
    budget_usd_per_month: float | None = Field(default=None, gt=0)
    endpoint: dict = Field(default_factory=dict, description="EndpointConfig fields every candidate shares")
    simulation: Simulation = Field(default_factory=Simulation)
    top: int = Field(default=10, ge=1, description="rows of the ranked table")
    compare_hosting: bool = Field(default=True, description="also size one endpoint per model and inference "
                                  "components for the same models, traffic and SLOs (mmesim.plan.hosting)")

    @model_validator(mode="after")
    def _check(self) -> "PlanMix":
        names = [g.name for g in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model group names repeat: {names}")
        if self.simulation.warmup_s >= self.simulation.duration_s:
            raise ValueError("simulation.warmup_s must be shorter than simulation.duration_s")
        bad = {"instance_type", "instance_count"} & set(self.endpoint)
        if bad:
            raise ValueError(f"endpoint sets {', '.join(sorted(bad))}: the planner chooses those")
        return self

    @property
    def frameworks(self) -> list[str]:
        """Frameworks a candidate can use: every group has a profile for it, or has only one."""
        known = sorted({f for g in self.models for f in g.profiles if f != "*"} or {"*"})
        wanted = self.candidates.frameworks or known
        return [f for f in wanted if all(f in g.profiles or len(g.profiles) == 1 for g in self.models)]


def load_mix(path: str | Path) -> tuple[PlanMix, dict[str, ModelProfile]]:
    """The mix and every profile it names (each loaded once), all checked before anything runs."""
    path = Path(path)
    source = str(path)
    mix = validate(PlanMix, read_data(path), source=source)
    profiles: dict[str, ModelProfile] = {}
    for gi, g in enumerate(mix.models):
        for fw, names in g.profiles.items():
            for ni, name in enumerate(names):
                ref = name if Path(name).is_absolute() or not (path.parent / name).exists() else str(path.parent / name)
                try:
                    profiles[name] = load_profile(ref)
                except ConfigError as exc:
                    why = str(exc) if exc.source else "no built-in profile of that name and no such file (`mmesim profiles`)"
                    raise ConfigError(why, source=source,
                                      field=f"models[{gi}].profiles.{fw}" + (f"[{ni}]" if len(names) > 1 else ""),
                                      value=name) from None
                if fw != "*" and profiles[name].framework != fw:
                    raise ConfigError(f"profile is for {profiles[name].framework}, listed under {fw}", source=source,
                                      field=f"models[{gi}].profiles.{fw}", value=name)
    for fw in mix.candidates.frameworks or []:
        for g in mix.models:
            only = next(iter(g.profiles.values())) if len(g.profiles) == 1 else []
            if fw not in g.profiles and not (only and all(profiles[n].framework == fw for n in only)):
                raise ConfigError(f"model group '{g.name}' has no {fw} profile", source=source,
                                  field="candidates.frameworks", value=fw)
    if not mix.frameworks:
        raise ConfigError("no framework has a profile in every model group", source=source,
                          field="candidates.frameworks", value=mix.candidates.frameworks)
    try:
        endpoint_config(mix, load_catalog().instances.__iter__().__next__(), 0.9)
    except ConfigError as exc:
        raise ConfigError(str(exc).split(": ")[-1], source=source, field=f"endpoint.{exc.field}" if exc.field else "endpoint",
                          value=exc.value) from None
    if mix.traffic.trace and not Path(mix.traffic.trace).is_absolute():
        mix.traffic.trace = str((path.parent / mix.traffic.trace).resolve())
    return mix, profiles


def endpoint_config(mix: PlanMix, instance_type: str, threshold: float, count: int = 1) -> EndpointConfig:
    """The EndpointConfig of one candidate: the mix's shared settings, the candidate's choices."""
    data = {**mix.endpoint, "instance_type": instance_type, "instance_count": count, "memory_threshold": threshold}
    return validate(EndpointConfig, data, source="endpoint")


def choose_profile(group: ModelGroup, framework: str, profiles: dict[str, ModelProfile], gpu: str) -> ModelProfile:
    """The group's profile for ``framework`` (or its only one) made on this GPU if one is
    listed, else the first (translated by the simulator)."""
    names = group.profiles.get(framework) or next(iter(group.profiles.values()))
    for name in names:
        if profiles[name].gpu == gpu:
            return profiles[name]
    return profiles[names[0]]


def mix_weights(mix: PlanMix) -> list[float]:
    """Share of requests per target, in target order (group by group, copy by copy)."""
    total = sum(g.share for g in mix.models)
    out = []
    for g in mix.models:
        raw = [1.0 / (k ** g.s) if g.popularity == "zipf" else 1.0 for k in range(1, g.copies + 1)]
        norm = sum(raw)
        out.extend(g.share / total * w / norm for w in raw)
    return out
