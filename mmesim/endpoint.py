"""EndpointConfig: the endpoint a user would create: instances, thresholds, timeouts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mmesim.catalog import load_catalog
from mmesim.serde import Model


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

    @field_validator("instance_type")
    @classmethod
    def _known(cls, v: str) -> str:
        return load_catalog().instance(v).name
