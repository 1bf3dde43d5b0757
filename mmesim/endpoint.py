"""EndpointConfig: the endpoint a user would create: instances, thresholds, timeouts."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmesim.catalog import LOCAL, InstanceType, load_catalog, local_instance
from mmesim.errors import ConfigError
from mmesim.profile import WakePlacement
from mmesim.serde import Model, read_fields, validate


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
    platform: PlatformCosts = Field(default_factory=PlatformCosts,
                                    description="download, untar and load costs and their sharing")
    routing: Literal["loaded-least-busy"] = "loaded-least-busy"
    spread_inflight: int = Field(default=64, ge=1,
                                 description="a hot model loads on another instance once its least busy one has this many in flight")
    autoscaling: AutoScaling | None = Field(default=None, description="None: a fixed instance_count")

    memory_budget_bytes: int | None = Field(default=None, gt=0,
                                            description="instance type local only: the memory models may fill "
                                                        "(its NVML total); default a quarter of RAM, as calibrate")

    host_wakeups: WakePlacement | None = Field(
        default=None, description="instance type local only: how this host places woken threads "
                                  "(examples/host_wakeups.py; packed_share 0: on an idle core at once, processor "
                                  "sharing); default: as the profiles' calibrations measured it")

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
        if self.instance_type != LOCAL and self.host_wakeups is not None:
            raise ValueError(f"host_wakeups applies to instance type {LOCAL} only (it describes the host's own cores)")
        return self

    def instance(self) -> InstanceType:
        """The instance type this endpoint runs on (``local`` with its memory budget)."""
        if self.instance_type == LOCAL:
            return local_instance(self.memory_budget_bytes)
        return load_catalog().instance(self.instance_type)


FAIR = WakePlacement(packed_share=0.0, moved_after_s=1e-3, source="processor sharing: a woken thread on an idle "
                                                                   "core at once, every thread slowed alike on a "
                                                                   "full host")


def host_placement(given: WakePlacement | None, profiles, instance_type: str) -> WakePlacement | None:
    """How the simulated host places woken threads; None: processor sharing.

    Only ``local`` has its own cores to place threads on. The endpoint's placement wins
    (``FAIR``, share 0, asks for processor sharing); otherwise the one ``mmesim calibrate``
    measured with the profiles, since ``local`` is the host they were calibrated on and the
    placement is that host's kernel, not a model's: leaving it out would model a scheduler the
    probe found absent (on this project's VMs a quarter to a third of such wake-ups take a busy
    core). Profiles calibrated apart measured the same host more than once: their median."""
    if instance_type != LOCAL:
        return None
    if given is not None:
        return given if given.displaces else None
    measured = [p.host_wakeups for p in profiles if p.host_wakeups is not None]
    if not measured:
        return None
    placed = measured[0]
    figures = ("packed_share", "moved_after_s", "full_share", "slice_s", "late_wait_s")
    if any(w.model_dump(include=set(figures)) != placed.model_dump(include=set(figures)) for w in measured):
        # the full host's figures from the probes that measured them (older ones did not)
        full = [w for w in measured if w.full_share is not None]
        median = lambda ws, key: statistics.median(getattr(w, key) for w in ws) if ws else None   # noqa: E731
        placed = WakePlacement(packed_share=median(measured, "packed_share"),
                               moved_after_s=median(measured, "moved_after_s"),
                               full_share=median(full, "full_share"), slice_s=median(full, "slice_s"),
                               late_wait_s=median([w for w in full if w.late_wait_s], "late_wait_s"),
                               source=f"the median of {len(measured)} profiles' calibrations: "
                                      + "; ".join(sorted({w.source or "unsaid" for w in measured})))
    return placed if placed.displaces else None


def read_host_wakeups(path: str | Path) -> WakePlacement:
    """A WakePlacement from a file: what ``examples/host_wakeups.py --out`` wrote (its
    ``placement``), or the fields alone (YAML or JSON); ``fair``: processor sharing."""
    if str(path) == "fair":
        return FAIR
    data = read_fields(path)
    if "by_pause" in data or "placement" in data:        # the probe's whole output
        data = data.get("placement")
        if data is None:
            raise ConfigError("a probe's output without its placement (run without its chain pattern, or "
                              "before it measured one): run examples/host_wakeups.py again", source=str(path),
                              field="placement")
    return validate(WakePlacement, data, source=str(path))
