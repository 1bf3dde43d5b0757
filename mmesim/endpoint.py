"""EndpointConfig: the endpoint a user would create: instances, thresholds, timeouts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmesim.catalog import LOCAL, InstanceType, load_catalog, local_instance
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

    memory_budget_bytes: int | None = Field(default=None, gt=0,
                                            description="instance type local only: the memory models may fill "
                                                        "(its NVML total); default a quarter of RAM, as calibrate")

    @field_validator("instance_type")
    @classmethod
    def _known(cls, v: str) -> str:
        return load_catalog().instance(v).name

    @model_validator(mode="before")
    @classmethod
    def _no_front_end_here(cls, data):
        """On ``local`` there is no SageMaker front end: a client talks to the server directly."""
        if isinstance(data, dict) and data.get("instance_type") == LOCAL and data.get("overhead_s") is None:
            data = {**data, "overhead_s": 0.0}
        return data

    @model_validator(mode="after")
    def _budget_is_local(self) -> "EndpointConfig":
        if self.instance_type != LOCAL and self.memory_budget_bytes is not None:
            raise ValueError(f"memory_budget_bytes applies to instance type {LOCAL} only (a GPU's memory is "
                             "the catalogue's)")
        return self

    def instance(self) -> InstanceType:
        """The instance type this endpoint runs on (``local`` with its memory budget)."""
        if self.instance_type == LOCAL:
            return local_instance(self.memory_budget_bytes)
        return load_catalog().instance(self.instance_type)
