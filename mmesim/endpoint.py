"""EndpointConfig: the endpoint a user would create: instances, thresholds, timeouts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmesim.catalog import load_catalog
from mmesim.serde import Model


class AutoScaling(Model):
    """SageMaker target tracking on a production variant (Application Auto Scaling).

    Every ``period_s`` the metric gets one datapoint: InvocationsPerInstance is the
    requests answered in the period per in-service instance (CloudWatch's per-minute
    figure); GPUUtilization is the mean GPU busy percent over in-service instances.
    As the alarms target tracking creates do, the endpoint scales out once
    ``scale_out_datapoints`` datapoints in a row exceed ``target`` and scales in once
    ``scale_in_datapoints`` in a row fall below ``scale_in_ratio`` x target, to
    ceil(in-service x metric / target) instances within [min, max], each direction
    respecting its cooldown. A new instance serves after ``startup_s`` and holds no
    model: its models load on their first requests."""

    metric: Literal["InvocationsPerInstance", "GPUUtilization"] = "InvocationsPerInstance"
    target: float = Field(gt=0, description="requests per instance per minute, or GPU percent")
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(ge=1)
    scale_out_cooldown_s: float = Field(default=300.0, ge=0, description="SageMaker's default")
    scale_in_cooldown_s: float = Field(default=300.0, ge=0, description="SageMaker's default")
    startup_s: float = Field(default=300.0, ge=0,
                             description="from the scaling decision until a new instance is InService")
    period_s: float = Field(default=60.0, gt=0, description="CloudWatch period of the metric")
    scale_out_datapoints: int = Field(default=3, ge=1, description="target tracking's high alarm: 3 of 1 min")
    scale_in_datapoints: int = Field(default=15, ge=1, description="target tracking's low alarm: 15 of 1 min")
    scale_in_ratio: float = Field(default=0.9, gt=0, le=1, description="the low alarm fires below this x target")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoScaling":
        if self.max_instances < self.min_instances:
            raise ValueError(f"max_instances {self.max_instances} < min_instances {self.min_instances}")
        return self


class EndpointConfig(Model):
    instance_type: str
    instance_count: int = Field(default=1, ge=1)
    memory_threshold: float = Field(default=0.90, gt=0, le=1,
                                    description="share of NVML total GPU memory models may fill")
    disk_cache_bytes: int | None = Field(default=None, gt=0, description="default: the instance's disk")
    invocation_timeout_s: float = Field(default=60.0, gt=0)
    model_ready_timeout_s: float = Field(default=60.0, gt=0,
                                         description="ModelNotReadyException if not loaded in this time")
    max_inflight_per_instance: int | None = Field(default=None, ge=1,
                                                  description="overload limit; default: the profiles' max_inflight")
    overhead_s: float = Field(default=0.030, ge=0,
                              description="SageMaker front end and the client's round trip per request, a pure "
                                          "delay (OverheadLatency); 30 ms is what the built-in profiles were "
                                          "derived with (calibration/README.md)")
    routing: Literal["loaded-least-busy"] = "loaded-least-busy"
    spread_inflight: int = Field(default=64, ge=1,
                                 description="a hot model loads on another instance once its least busy one has this many in flight")
    autoscaling: AutoScaling | None = Field(default=None, description="None: a fixed instance_count")

    @field_validator("instance_type")
    @classmethod
    def _known(cls, v: str) -> str:
        return load_catalog().instance(v).name
