"""``mmesim emulate``: a SageMaker multi-model endpoint on this machine. Builds the store,
the backends (real Triton or virtual GPU), the platform and the front, serves until told
to stop, then writes the request log as a measured Run (summary.json, Locust CSVs, ...)."""

from __future__ import annotations

import asyncio
import re
import signal
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmesim.emulator.backends import TritonBackend, VirtualBackend
from mmesim.emulator.front import Front
from mmesim.emulator.metrics import Metrics
from mmesim.emulator.platform import Platform
from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.results.records import Records, Run

BACKENDS = ("triton", "virtual")
LOCAL = "local"


@dataclass
class EmulatorConfig:
    instance: str                                # a catalogue type, or "local"
    models: str                                  # a directory, file://dir or s3://bucket/prefix
    backend: str = "virtual"
    profiles: list[ModelProfile] = field(default_factory=list)
    instance_count: int = 1
    endpoint_name: str = "mmesim"
    host: str = "127.0.0.1"
    port: int = 8080
    out: Path | None = None
    memory_budget_bytes: int | None = None       # local: the "GPU memory"; triton without a GPU: its budget
    threshold: float = 0.90
    ready_timeout_s: float = 60.0
    cache_dir: Path | None = None
    cache_bytes: int = 20 * 2**30
    s3_endpoint_url: str | None = None
    tritonserver: str | None = None
    seed: int = 0
    keys: dict[str, str] | None = None           # access key -> secret: verify SigV4 when given

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"use one of {', '.join(BACKENDS)}", field="--backend", value=self.backend)
        if self.instance_count < 1:
            raise ConfigError("must be at least 1", field="--instance-count", value=self.instance_count)
        if self.backend == "virtual" and not self.profiles:
            raise ConfigError("the virtual backend takes memory and timings from profiles: give --profile NAME|PATH",
                              field="--profile")
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", self.endpoint_name) or len(self.endpoint_name) > 63:
            raise ConfigError("letters, digits and hyphens, up to 63", field="--endpoint-name", value=self.endpoint_name)
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


# -- the artifact store ---------------------------------------------------------------------
def make_store(config: EmulatorConfig, cache_dir: Path):
    """emustore's ArtifactStore (mmesim.emulator.store) when present; else a stand-in that
    serves a local directory of model directories or tarballs (no S3, no cache limit)."""
    try:
        from mmesim.emulator.store import ArtifactStore, validate_target_model
    except ImportError:
        return _DirectoryStandIn(config.models, cache_dir), _DirectoryStandIn.validate
    return (ArtifactStore(config.models, cache_dir, config.cache_bytes, s3_endpoint_url=config.s3_endpoint_url),
            validate_target_model)


@dataclass
class _Fetched:
    path: Path
    artifact_bytes: int
    download_s: float
    extract_s: float
    cache_hit: bool


class _DirectoryStandIn:
    """Until the artifact store lands: ``<dir>/<TargetModel>`` as a tarball (extracted once
    with tarfile's "data" filter) or a model directory."""

    def __init__(self, source: str, cache_dir: Path):
        if source.startswith("s3://"):
            raise ConfigError("s3:// sources need the artifact store (mmesim.emulator.store)", field="--models",
                              value=source)
        self.root, self.cache = Path(source.removeprefix("file://")), cache_dir
        self._lock = threading.Lock()
        self._done: dict[str, _Fetched] = {}

    @staticmethod
    def validate(name: str) -> str:
        if not name or "/" in name or "\\" in name or name.startswith(".") or "%" in name or "\x00" in name:
            from mmesim.emulator.errors import ValidationError
            raise ValidationError(f"invalid TargetModel {name!r}")
        return name

    def fetch(self, name: str) -> _Fetched:
        with self._lock:
            if name in self._done:
                f = self._done[name]
                return _Fetched(f.path, f.artifact_bytes, 0.0, 0.0, True)
            src = self.root / name
            if not src.exists():
                from mmesim.emulator.errors import ValidationError
                raise ValidationError(f"Could not find model data at {src}")
            if src.is_dir():
                fetched = _Fetched(src, sum(p.stat().st_size for p in src.rglob("*") if p.is_file()), 0.0, 0.0, False)
            else:
                t = time.perf_counter()
                dest = self.cache / f"m{len(self._done)}"
                dest.mkdir(parents=True)
                with tarfile.open(src) as tar:
                    tar.extractall(dest, filter="data")
                fetched = _Fetched(dest, src.stat().st_size, 0.0, time.perf_counter() - t, False)
            self._done[name] = fetched
            return fetched


# -- the emulator ---------------------------------------------------------------------------
class Emulator:
    """Everything ``mmesim emulate`` runs, on one asyncio loop."""

    def __init__(self, config: EmulatorConfig):
        config.check()
        self.config = config
        self.type_name, self.total, self.price, self.vcpus = instance_memory(config)
        self.profiles = self._profiles()
        self.records = Records()
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._runner = None
        self._watch = None
        self.platform: Platform | None = None

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
            return [VirtualBackend(self.total, baseline, seed=c.seed + i) for i in range(c.instance_count)]
        budget = c.memory_budget_bytes or self.total
        return [TritonBackend(budget, binary=c.tritonserver) for _ in range(c.instance_count)]

    async def start(self) -> str:
        from aiohttp import web
        c = self.config
        self._tmp = tempfile.TemporaryDirectory(prefix="mmesim-emulate-")
        cache = c.cache_dir or Path(self._tmp.name) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        store, validate = make_store(c, cache)
        self.platform = Platform(self._backends(), store, profile_matcher(self.profiles), threshold=c.threshold,
                                 ready_timeout_s=c.ready_timeout_s)
        self.metrics = Metrics(c.endpoint_name, c.instance_count)
        self.platform.on_event = self.metrics.event
        try:
            await self.platform.start()
        except BaseException:
            await self.platform.stop()
            raise
        self._watch = asyncio.ensure_future(self.platform.watch())
        front = Front(c.endpoint_name, self.platform, self.records, self.metrics, validate,
                      verify=self._verifier(), control=None)
        self._runner = web.AppRunner(front.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, c.host, c.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{c.host}:{port}"
        return self.url

    def _verifier(self):
        if not self.config.keys:
            return None
        from mmesim.emulator.auth import verify_sigv4     # emustore's SigV4 check (interfaces.md item 4)
        keys = self.config.keys

        def verify(request, body: bytes) -> None:
            verify_sigv4(request.method, str(request.url), dict(request.headers), body, keys)
        return verify

    async def stop(self) -> Run:
        if self._watch is not None:
            self._watch.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        duration = self.platform.clock() if self.platform else 0.0
        if self.platform is not None:
            await self.platform.stop()
        run = self.run(duration)
        if self._tmp is not None:
            self._tmp.cleanup()
        return run

    def run(self, duration: float) -> Run:
        """The request log so far as a measured Run (the simulator's own record types)."""
        p = self.platform
        return Run(records=self.records, duration_s=max(duration, 1.0),
                   request_name={m: base_name(m) for m in self.records.models},
                   events=list(p.events), memory=sorted(p.memory), gpu_total_bytes=self.total,
                   gpu_busy_s=[b for b in (i.backend.gpu_busy_s() for i in p.instances) if b is not None],
                   instance_type=self.type_name, instance_count=len(p.instances), price_usd_per_hour=self.price,
                   kind="measurement",
                   meta={"emulator": True, "backend": self.config.backend, "endpoint": self.config.endpoint_name,
                         "profiles": [pr.name for pr in self.profiles],
                         "backend_restarts": [i.restarts for i in p.instances]})


def write_run(run: Run, out: Path) -> dict[str, Path]:
    """summary.json, Locust CSVs, requests.csv, cloudwatch.csv (and charts) through the
    project's one Summary and writers."""
    from mmesim.results.outputs import write_outputs
    from mmesim.results.summary import summarize
    return write_outputs(run, summarize(run), out)


def serve(config: EmulatorConfig, on_ready=print) -> tuple[Run, dict[str, Path]]:
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
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            url = loop.run_until_complete(emulator.start())
            on_ready(url)
            loop.run_until_complete(stop.wait())
        finally:
            run = loop.run_until_complete(emulator.stop())
        files = write_run(run, config.out) if config.out and len(run.records) else {}
        return run, files
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        loop.close()
