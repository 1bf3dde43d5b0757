"""EndpointConfig: the endpoint a user would create: instances, thresholds, timeouts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmesim.catalog import LOCAL, InstanceType, load_catalog, local_instance
from mmesim.serde import Model


class PlatformCosts(Model):
    """What bringing a model from S3 into GPU memory costs on an instance, beyond the
    profile's ``load_s`` (one load alone, from local disk). Loads and downloads that overlap
    share the instance's resources, so N at once each take longer (mmesim/sim/instance.py):

    - download: ``s3_first_byte_s``, then the artifact over the network at
      min(streams x per-stream rate, the instance's bandwidth / downloads in progress), then
      untar on one vCPU at ``untar_bytes_per_s`` (x the instance's cpu_speed);
    - load: at most ``load_parallelism`` at once (the rest queue); each reads the artifact
      from the cache volume (catalogue ``disk_mbs``, shared), deserialises on one vCPU (what
      remains of ``load_s``; untar and deserialising share the vCPUs), and copies its resident
      bytes to the GPU over PCIe (catalogue ``pcie_gbs`` x ``h2d_share``, shared)."""

    load_parallelism: int = Field(default=4, ge=1,
                                  description="loads run at once: Triton's --model-load-thread-count (default 4); "
                                              "measured through POST /models on Triton 2.51 "
                                              "(tests/test_platform_triton.py). Releases whose repository manager "
                                              "holds one lock for a whole explicit load run them one at a time: 1")
    s3_first_byte_s: float = Field(default=0.15, ge=0,
                                   description="S3 GET latency to the first byte; AWS quotes 100-200 ms")
    s3_stream_bytes_per_s: float = Field(default=87.5e6, gt=0,
                                         description="one S3 connection; AWS's S3 performance guidelines: "
                                                     "one connection per 85-90 MB/s")
    s3_streams_per_download: int = Field(default=10, ge=1,
                                         description="ranged GETs in parallel per artifact (boto3's and the AWS "
                                                     "CLI's default max_concurrency is 10; SageMaker's own "
                                                     "downloader is not documented)")
    untar_bytes_per_s: float = Field(default=250e6, gt=0,
                                     description="tar.gz extraction on one vCPU of catalogue cpu_speed 1.0: zlib "
                                                 "inflates ~300-400 MB/s per core (lzbench), less the writes")
    h2d_share: float = Field(default=0.5, gt=0, le=1,
                             description="share of the PCIe link a framework's weight upload reaches: copies "
                                         "from pageable host memory go through pinned staging buffers")


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
    platform: PlatformCosts = Field(default_factory=PlatformCosts,
                                    description="download, untar and load costs and their sharing")
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
