"""``mmesim emulate``: a SageMaker multi-model endpoint on this machine. Builds the store,
the backends (real Triton or virtual GPU), the platform and the front, serves until told
to stop, then writes the request log as a measured Run (summary.json, Locust CSVs, ...)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from mmesim.catalog import LOCAL
from mmesim.emulator.backends import TritonBackend, VirtualBackend
from mmesim.emulator.front import Front
from mmesim.emulator.metrics import Metrics
from mmesim.emulator.platform import Platform
from mmesim.emulator.requestlog import RequestLog
from mmesim.endpoint import WakePlacement, host_placement
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.results.records import Run
from mmesim.sim.policy import inflight_limit

BACKENDS = ("triton", "virtual")
WORK_PREFIX = "mmesim-emulate-"           # + <pid>-: the work folder (cache, request log) of one emulator
LOCAL = "local"


@dataclass
class EmulatorConfig:
    instance: str | None                         # a catalogue type, or "local"
    models: str | None                           # a directory, file://dir or s3://bucket/prefix; None: only
                                                 # endpoints the control plane creates
    backend: str = "virtual"
    profiles: list[ModelProfile] = field(default_factory=list)
    instance_count: int = 1
    endpoint_name: str = "mmesim"
    variant_name: str = "AllTraffic"             # InvokedProductionVariant (CreateEndpointConfig's VariantName)
    host: str = "127.0.0.1"
    port: int = 8080
    out: Path | None = None
    memory_budget_bytes: int | None = None       # local: the "GPU memory"; triton without a GPU: its budget
    threshold: float = 0.90
    ready_timeout_s: float = 60.0
    invocation_timeout_s: float = 60.0           # SageMaker's: ModelError (status 0) past it
    cache_dir: Path | None = None
    cache_bytes: int = 20 * 2**30
    s3_endpoint_url: str | None = None
    tritonserver: str | None = None
    seed: int = 0
    keys: dict[str, str] | None = None           # access key -> secret: verify SigV4 when given
    max_inflight: int | None = None              # shed beyond this per instance; default: the profiles' limit
    max_model_bytes: int | None = None           # an artifact unpacking past this is refused; default: the
                                                 # instance's memory (no model bigger than it can be served)
    max_unpack_ratio: float = 100.0              # ... or past this many times its packed size
    host_wakeups: WakePlacement | None = None    # local, virtual backend: how this host places woken threads

    def check(self) -> None:
        """Every setting, before anything listens (``models`` None: those a CreateEndpoint
        does not give, so that a bad flag does not wait for the first endpoint to fail)."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"use one of {', '.join(BACKENDS)}", field="--backend", value=self.backend)
        if not self.invocation_timeout_s > 0:
            raise ConfigError("must be more than 0 seconds", field="--invocation-timeout",
                              value=self.invocation_timeout_s)
        if self.instance_count < 1:
            raise ConfigError("must be at least 1", field="--instance-count", value=self.instance_count)
        if self.host_wakeups is not None and (self.instance != LOCAL or self.backend != "virtual"):
            raise ConfigError("applies to the virtual backend on --instance local (a real Triton's threads are "
                              "placed by this host itself)", field="--host-wakeups")
        if self.backend == "virtual" and not self.profiles:
            raise ConfigError("the virtual backend takes memory and timings from profiles: give --profile NAME|PATH",
                              field="--profile")
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", self.endpoint_name) or len(self.endpoint_name) > 63:
            raise ConfigError("letters, digits and hyphens, up to 63", field="--endpoint-name", value=self.endpoint_name)
        for flag, value, ok, why in (
                ("--threshold", self.threshold, 0 < self.threshold <= 1, "a share of memory in (0, 1]"),
                ("--ready-timeout", self.ready_timeout_s, 0 < self.ready_timeout_s < float("inf"), "seconds > 0"),
                ("--max-inflight", self.max_inflight, self.max_inflight is None or self.max_inflight >= 1,
                 "at least 1"),
                ("--port", self.port, 0 <= self.port <= 65535, "0 (any free port) to 65535"),
                ("--seed", self.seed, self.seed >= 0, "a whole number >= 0"),
                ("--max-model-bytes", self.max_model_bytes, self.max_model_bytes is None or self.max_model_bytes > 0,
                 "more than 0 bytes"),
                ("--max-unpack-ratio", self.max_unpack_ratio, self.max_unpack_ratio >= 1, "at least 1")):
            if not ok:
                raise ConfigError(f"must be {why}", field=flag, value=value)
        if self.instance and self.instance != LOCAL:
            from mmesim.catalog import load_catalog
            load_catalog().instance(self.instance)           # an unknown type: the catalogue's error
            if self.memory_budget_bytes is not None and self.backend == "virtual":
                raise ConfigError(f"the virtual backend on {self.instance} has the catalogue GPU's memory; a budget "
                                  "applies to --instance local or the triton backend", field="--memory-budget",
                                  value=self.memory_budget_bytes)
        from mmesim.serde import check_out_folder
        for flag, folder in (("--out", self.out), ("--cache-dir", self.cache_dir)):
            if folder is not None:
                check_out_folder(folder, flag)
        if self.models is None:
            return
        if not self.instance:
            raise ConfigError("say which instance type: --instance TYPE|local", field="--instance")
        if not self.models.startswith("s3://"):
            root = Path(self.models.removeprefix("file://"))
            if not root.is_dir():
                raise ConfigError("no such directory", field="--models", value=self.models)


# -- the instance: what memory it has --------------------------------------------------------
def instance_memory(config: EmulatorConfig) -> tuple[str, int, float, int]:
    """(instance type name, memory total in bytes, price per hour, vCPUs) of the emulated instance."""
    from mmesim import catalog as catalog_module
    catalog = catalog_module.load_catalog()
    if config.instance == LOCAL:
        it = catalog_module.local_instance(config.memory_budget_bytes)
        return it.name, it.memory_budget_bytes, it.price_usd_per_hour, it.vcpus
    it = catalog.instance(config.instance)
    return it.name, catalog.gpu_of(it).nvml_total_bytes, it.price_usd_per_hour, it.vcpus


# -- which profile a target model takes --------------------------------------------------------
def base_name(target: str) -> str:
    """``resnet50-v3.tar.gz`` -> ``resnet50``: the model a copy belongs to, as the reference
    named its copies (and as ``mmesim package --copies`` writes them)."""
    name = re.sub(r"\.(tar\.gz|tgz)$", "", target)
    return re.sub(r"-v\d+$", "", name)


def profile_matcher(profiles: list[ModelProfile]):
    """target -> profile: the one whose model (or profile name) is the target's base name;
    with a single profile, every target."""
    by_name = {}
    for p in profiles:
        by_name.setdefault(p.model, p)
        by_name.setdefault(p.name, p)
    cache: dict[str, ModelProfile | None] = {}

    def profile_for(target: str) -> ModelProfile | None:
        if target not in cache:
            cache[target] = by_name.get(base_name(target)) or (profiles[0] if len(profiles) == 1 else None)
        return cache[target]
    return profile_for


# -- one endpoint ---------------------------------------------------------------------------
class Endpoint:
    """One multi-model endpoint: its artifact store, instances (backends), platform, request
    log and metrics. The CLI's endpoint and each one CreateEndpoint makes are alike."""

    def __init__(self, config: EmulatorConfig, workdir: Path):
        config.check()
        self.config, self.name = config, config.endpoint_name
        self.type_name, self.total, self.price, self.vcpus = instance_memory(config)
        self.profiles = self._profiles()
        self.records = RequestLog(workdir / "requests")      # streamed to disk: memory stays flat
        self.metrics = Metrics(config.endpoint_name, config.instance_count, config.variant_name)
        self.workdir = workdir
        self.platform: Platform | None = None
        self._watch: asyncio.Future | None = None
        self.run_result: Run | None = None

    def _profiles(self) -> list[ModelProfile]:
        """Profiles as the emulated instance runs them: translated to its GPU (a catalogue type)."""
        if self.config.instance == LOCAL:
            return list(self.config.profiles)
        from mmesim.catalog import load_catalog
        from mmesim.sim.translate import translate
        it = load_catalog().instance(self.config.instance)
        return [translate(p, it) for p in self.config.profiles]

    def _backends(self):
        c = self.config
        if c.backend == "virtual":
            baseline = max((p.baseline_gpu_bytes for p in self.profiles), default=0)
            wakeups = host_placement(c.host_wakeups, self.profiles, c.instance)    # as the simulator's
            return [VirtualBackend(self.total, baseline, seed=c.seed + i, instance=c.instance, wakeups=wakeups)
                    for i in range(c.instance_count)]
        budget = c.memory_budget_bytes or self.total
        return [TritonBackend(budget, binary=c.tritonserver) for _ in range(c.instance_count)]

    async def start(self) -> None:
        from mmesim.emulator.store import ArtifactStore
        c = self.config
        cache = c.cache_dir or self.workdir / "cache"
        store = ArtifactStore(c.models, cache, c.cache_bytes, s3_endpoint_url=c.s3_endpoint_url,
                              max_extract_bytes=c.max_model_bytes or self.total, max_ratio=c.max_unpack_ratio)
        self.platform = Platform(self._backends(), store, profile_matcher(self.profiles), threshold=c.threshold,
                                 ready_timeout_s=c.ready_timeout_s, invocation_timeout_s=c.invocation_timeout_s,
                                 vcpus=self.vcpus,
                                 max_inflight=inflight_limit(c.max_inflight, self.profiles))
        self.platform.on_event = self.metrics.event
        try:
            await self.platform.start()
        except BaseException:
            await self.platform.stop()
            raise
        self._watch = asyncio.ensure_future(self.platform.watch())

    async def stop(self) -> Run:
        """Stop every backend; the request log so far becomes the endpoint's Run."""
        if self.run_result is not None:
            return self.run_result
        if self._watch is not None:
            self._watch.cancel()
        duration = self.platform.clock() if self.platform else 0.0
        if self.platform is not None:
            await self.platform.stop()
        self.run_result = self.run(duration)
        return self.run_result

    def run(self, duration: float) -> Run:
        """The request log as a measured Run (the simulator's own record types)."""
        p = self.platform
        instances = p.instances if p else []
        records = self.records.records()
        self.records.close()
        return Run(records=records, duration_s=max(duration, 1.0),
                   request_name={m: base_name(m) for m in records.models},
                   events=list(p.events) if p else [], memory=sorted(p.memory) if p else [],
                   utilization={k: [list(v) for v in per] for k, per in p.utilization.items()} if p else {},
                   gpu_total_bytes=self.total,
                   gpu_busy_s=[b for b in (i.backend.gpu_busy_s() for i in instances) if b is not None],
                   instance_type=self.type_name, instance_count=self.config.instance_count,
                   price_usd_per_hour=self.price, kind="measurement", backend=self.config.backend,
                   backend_restarts=[i.restarts for i in instances], profiles=[pr.name for pr in self.profiles],
                   targets=len(records.models), vcpus=self.vcpus,
                   max_inflight_per_instance=p.max_inflight if p else None,
                   sources=dict.fromkeys(("requests", "cold_starts", "loads", "memory"), "emulator log"))


# -- the emulator ---------------------------------------------------------------------------
class Emulator:
    """Everything ``mmesim emulate`` runs, on one asyncio loop: the endpoint of the command
    line (if ``models`` is given) and those the control plane creates, behind one front."""

    def __init__(self, config: EmulatorConfig):
        config.check()
        self.config = config
        self.endpoints: dict[str, Endpoint] = {}
        self.finished: list[Endpoint] = []
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._runner = None
        self.control = None

    async def start(self) -> str:
        from aiohttp import web

        from mmesim.emulator.control import ControlPlane, EndpointSpec
        from mmesim.process import remove_leftovers
        c = self.config
        remove_leftovers(Path(tempfile.gettempdir()), WORK_PREFIX)        # of an emulator that crashed
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-")
        self.control = ControlPlane(self._on_create, self._on_delete)
        if c.models:
            endpoint = await self._add(c)
            self.control.adopt(EndpointSpec(name=c.endpoint_name, config_name=c.endpoint_name,
                                            model_name=c.endpoint_name, model_data_url=c.models,
                                            instance_type=endpoint.type_name, instance_count=c.instance_count))
        self.front = front = Front(self.endpoints, self.control, keys=c.keys)
        self._runner = front.runner()
        await self._runner.setup()
        site = web.TCPSite(self._runner, c.host, c.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen there ({exc.strerror}); choose another, or 0 for any free port",
                              field="--port", value=f"{c.host}:{c.port}") from None
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{c.host}:{port}"
        return self.url

    async def _add(self, config: EmulatorConfig) -> Endpoint:
        workdir = Path(self._tmp.name) / config.endpoint_name
        workdir.mkdir(parents=True, exist_ok=True)
        endpoint = Endpoint(config, workdir)
        try:
            await endpoint.start()
        except BaseException:
            endpoint.records.close()
            raise
        self.endpoints[config.endpoint_name] = endpoint
        return endpoint

    async def _on_create(self, spec) -> None:
        """CreateEndpoint: the command line's backend, profiles and budget, the spec's
        instance type, count and ModelDataUrl."""
        if spec.name in self.endpoints:
            raise ConfigError("an endpoint of that name is served already", field="EndpointName", value=spec.name)
        await self._add(replace(self.config, endpoint_name=spec.name, models=spec.model_data_url,
                                instance=spec.instance_type, instance_count=spec.instance_count, cache_dir=None,
                                variant_name=spec.variant_name))

    async def _on_delete(self, name: str) -> None:
        endpoint = self.endpoints.pop(name, None)
        if endpoint is not None:
            await endpoint.stop()
            self.finished.append(endpoint)

    async def stop(self) -> list[tuple[str, Run]]:
        """Stop the front, every endpoint and backend; the Runs of every endpoint served."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self.control is not None:
            await self.control.close()
        for name in list(self.endpoints):
            await self._on_delete(name)
        if self._tmp is not None:
            self._tmp.cleanup()
        return [(e.name, e.run_result) for e in self.finished]


def write_run(run: Run, out: Path) -> dict[str, Path]:
    """summary.json, Locust CSVs, requests.csv, cloudwatch.csv (and charts) through the
    project's one Summary and writers."""
    from mmesim.outputs import write_outputs
    from mmesim.results.summary import summarize
    return write_outputs(run, summarize(run), out)


def write_runs(runs: list[tuple[str, Run]], config: EmulatorConfig) -> dict[str, Path]:
    """Each endpoint's outputs: the command line's into ``out``, others into ``out/<name>``."""
    files: dict[str, Path] = {}
    for name, run in runs:
        if config.out and len(run.records):
            folder = config.out if (name == config.endpoint_name and config.models) else config.out / name
            files.update({f"{name}:{k}": v for k, v in write_run(run, folder).items()})
    return files


def serve(config: EmulatorConfig, on_ready=print) -> tuple[list[tuple[str, Run]], dict[str, Path]]:
    """Run the emulator until SIGINT or SIGTERM; then stop everything it started and write
    the outputs (if ``config.out``). ``on_ready(url)`` is called once it listens."""
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    emulator = Emulator(config)
    stop = asyncio.Event()

    async def until_stopped():
        # One run of the loop from start to stop: uvloop listens for signals only while it
        # runs, so a SIGTERM that came between two runs (just after the URL was printed, on a
        # busy machine) was lost and the emulator served on.
        try:
            on_ready(await emulator.start())
            await stop.wait()
        finally:
            runs = await emulator.stop()
        return runs

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runs = loop.run_until_complete(until_stopped())
        return runs, write_runs(runs, config)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        loop.close()
