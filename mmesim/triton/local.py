"""Triton as a local process: the ``tritonserver`` on PATH (a full install, e.g. inside
NVIDIA's image) or the one bundled in the ``nvidia-pytriton`` wheel (CPU here; only the
Python backend ships with it).

The bundled binary needs three things set up, or the Python backend's stub dies at start:
the stub for the *running* Python version inside the backend directory, the running
interpreter's libpython first on LD_LIBRARY_PATH, and this interpreter's bin first on PATH
(the stub imports torch & co. from the python it finds there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from mmesim.errors import MissingPiece
from mmesim.process import die_with_parent, remove_leftovers
from mmesim.triton.args import Ports, ServerOptions, server_args, server_env
from mmesim.triton.server import TritonServer

BACKEND_OF_PLATFORM = {"python": "python", "pytorch": "pytorch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}

HOW_TO_GET = ("install the triton extra (pip install 'mmesim[triton]', which brings nvidia-pytriton and its "
              "bundled tritonserver), put a full tritonserver on PATH, or use --runner docker on a host with Docker")


@dataclass(frozen=True)
class Installation:
    """A tritonserver binary and where its backends are."""

    binary: Path
    backends: Path
    bundled: bool                 # the nvidia-pytriton copy (needs the stub set-up)

    @property
    def available_backends(self) -> list[str]:
        if not self.backends.is_dir():
            return []
        return sorted(p.name for p in self.backends.iterdir() if p.is_dir())

    def require_backend(self, framework: str) -> None:
        backend = BACKEND_OF_PLATFORM[framework]
        if backend not in self.available_backends:
            hint = (" The tritonserver bundled with nvidia-pytriton ships only the python backend: use "
                    "--framework python, or run NVIDIA's Triton image (--runner docker, or the calibration image "
                    "in containers/), whose tritonserver has pytorch, onnxruntime and tensorrt backends."
                    if self.bundled else "")
            raise MissingPiece(f"the '{backend}' backend (for --framework {framework}) is not in {self.backends} "
                               f"(available: {', '.join(self.available_backends) or 'none'}).{hint}")


def find_tritonserver(binary: str | Path | None = None) -> Installation:
    """The given binary, else $MMESIM_TRITONSERVER, else ``tritonserver`` on PATH, else the
    one bundled in nvidia-pytriton; MissingPiece says how to get one if there is none."""
    explicit = binary or os.environ.get("MMESIM_TRITONSERVER")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingPiece(f"tritonserver binary {path} does not exist or is not executable; {HOW_TO_GET}")
        return _installation(path)
    on_path = shutil.which("tritonserver")
    if on_path:
        return _installation(Path(on_path))
    try:
        import pytriton
    except ImportError:
        raise MissingPiece(f"no tritonserver found (none on PATH, nvidia-pytriton not installed); {HOW_TO_GET}") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    path = root / "bin" / "tritonserver"
    if not path.is_file():
        raise MissingPiece(f"nvidia-pytriton is installed but has no tritonserver at {path}; {HOW_TO_GET}")
    return Installation(binary=path, backends=root / "backends", bundled=True)


def _installation(path: Path) -> Installation:
    path = path.resolve()
    bundled = path.parent.parent.name == "tritonserver" and path.parent.parent.parent.name == "pytriton"
    return Installation(binary=path, backends=path.parent.parent / "backends", bundled=bundled)


def _python_stub(installation: Installation) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = installation.backends.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingPiece(f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub}); "
                           "use a Python version it supports (3.8-3.13) or a full tritonserver on PATH")
    return stub


def prepare_backends(installation: Installation, into: Path) -> Path:
    """A backend directory for the bundled binary: its backends, with the stub for this Python."""
    into.mkdir(parents=True, exist_ok=True)
    for backend in installation.backends.iterdir():
        if not backend.is_dir():
            continue
        target = into / backend.name
        target.mkdir(exist_ok=True)
        for item in backend.iterdir():
            if item.name != "__pycache__" and not (target / item.name).exists():
                (target / item.name).symlink_to(item)
    python = into / "python"
    if python.is_dir() and not (python / "triton_python_backend_stub").exists():
        shutil.copy2(_python_stub(installation), python / "triton_python_backend_stub")
    return into


def local_env(installation: Installation, options: ServerOptions) -> dict[str, str]:
    """The environment that lets the bundled stub find this interpreter's libpython and packages."""
    env = dict(os.environ)
    env.update(server_env(options))
    libs = [sysconfig.get_config_var("LIBDIR") or ""]
    if installation.bundled:
        libs.append(str(installation.binary.parents[3] / "nvidia_pytriton.libs"))
    libs.append(env.get("LD_LIBRARY_PATH", ""))
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def stub_numpy(env: dict[str, str]) -> str | None:
    """The numpy version the Python-backend stub will import: that of the first python3 on
    the server's PATH (None if it has none)."""
    python = shutil.which("python3", path=env.get("PATH")) or shutil.which("python", path=env.get("PATH"))
    if not python:
        return None
    try:
        done = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], env=env, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def numpy_problem(version: str | None, python: str = "the stub's Python") -> str | None:
    """Why a numpy >= 2 beside the bundled stub breaks numpy outputs, and what to change."""
    if not version or int(version.split(".")[0]) < 2:
        return None
    return (f"numpy {version} in {python}: Triton 2.51's Python-backend stub is built with a pybind11 that reads "
            "numpy 1's dtype layout (PyArray_Descr.elsize moved in numpy 2), so an output made from a numpy array "
            "gets a wrong byte size and Triton answers \"output tensor shape does not match size of output\". "
            "mmesim's own models pass tensors through DLPack and are unaffected; for Python-backend models that "
            "return pb_utils.Tensor(name, ndarray), install numpy<2 there (pip install 'numpy<2') or use "
            "pb_utils.Tensor.from_dlpack")


SHM = Path("/dev/shm")
SHM_PREFIX = "mmesim_triton"          # + _<pid of the mmesim process>_<token>: whose regions they are
WORK_PREFIX = "mmesim-triton-"        # + <pid>-: work folders in the temp directory


def sweep_leftovers() -> list[Path]:
    """Remove what servers of crashed mmesim processes left (shared-memory regions, work
    folders): only names carrying our prefix, a pid that is no longer alive and our uid."""
    return remove_leftovers(SHM, SHM_PREFIX + "_") + remove_leftovers(Path(tempfile.gettempdir()), WORK_PREFIX)


def _loopback_env(options: ServerOptions) -> dict[str, str]:
    """LD_PRELOAD that keeps the SageMaker port (which Triton binds to 0.0.0.0) on loopback."""
    if not options.sagemaker or options.bind_address not in ("127.0.0.1", "localhost", "::1"):
        return {}
    from mmesim.triton.loopback import NoCompiler, preload_library
    try:
        library = preload_library()
    except NoCompiler as exc:
        raise MissingPiece(f"{exc}. Install one (e.g. apt-get install gcc), or accept Triton's ports on every "
                           "interface with MMESIM_TRITON_ADDRESS=0.0.0.0") from None
    return {"LD_PRELOAD": " ".join(p for p in (str(library), os.environ.get("LD_PRELOAD", "")) if p)}


class LocalTriton(TritonServer):
    """tritonserver as a child process in its own process group. Its Python-backend shared
    memory and work folder carry our pid, and go when it stops (crashed or not)."""

    def __init__(self, options: ServerOptions | None = None, ports: Ports | None = None, *,
                 binary: str | Path | None = None, workdir: str | Path | None = None, **kwargs):
        super().__init__(options, ports, **kwargs)
        self.installation = find_tritonserver(binary)
        sweep_leftovers()
        if self.options.shm_region_prefix is None:
            self.options = replace(self.options, shm_region_prefix=f"{SHM_PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-")
        self.workdir = Path(workdir or self._tmp.name)
        self.log_path = self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self.numpy_problem: str | None = None     # set at start: numpy >= 2 beside the bundled stub

    def _launch(self) -> None:
        options = self.options
        repo = Path(options.model_repository)
        if not repo.is_absolute() or options.model_repository == ServerOptions.model_repository:
            repo = self.workdir / "empty-repository"
        repo.mkdir(parents=True, exist_ok=True)
        backends = options.backend_directory
        if backends is None and self.installation.bundled:
            backends = str(prepare_backends(self.installation, self.workdir / "backends"))
        elif backends is None and self.installation.backends.is_dir():
            backends = str(self.installation.backends)
        self.options = replace(options, model_repository=str(repo), backend_directory=backends)
        cmd = [str(self.installation.binary), *server_args(self.options, self.ports)]
        env = local_env(self.installation, self.options)
        self.numpy_problem = numpy_problem(stub_numpy(env)) if self.installation.bundled else None
        env.update(_loopback_env(self.options))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent, cwd=self.workdir)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        self._signal_group(signal.SIGKILL)   # stubs left behind in the group, if any
        self._wait_group_dead()
        if not self._log.closed:
            self._log.close()
        return True

    def _wait_group_dead(self, timeout_s: float = 10.0) -> None:
        """A killed process dies a moment later: wait for the server's group to hold none but
        zombies (those its reaper has yet to collect), so nothing runs once stop() returns."""
        import psutil
        group = self.process.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                return
            alive = False
            for proc in psutil.process_iter(["status"]):
                try:
                    if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                        alive = True
                        break
                except (ProcessLookupError, PermissionError):
                    continue
            if not alive:
                return
            time.sleep(0.05)

    def _kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def shm_regions(self) -> list[Path]:
        """This server's Python-backend shared-memory regions in /dev/shm."""
        prefix = self.options.shm_region_prefix
        return sorted(SHM.glob(f"{prefix}*")) if prefix and SHM.is_dir() else []

    def stop(self) -> None:
        super().stop()
        for region in self.shm_regions():     # a killed server (or stub) never unlinks its own
            region.unlink(missing_ok=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
