"""What every way of running Triton shares: ports, readiness, graceful-then-forced stop,
and the guarantee that nothing is left running when the program ends (context manager,
atexit, process groups)."""

from __future__ import annotations

import atexit
import socket
import time
import urllib.error
import urllib.request
import weakref
from abc import ABC, abstractmethod
from pathlib import Path

from mmesim.errors import MmesimError
from mmesim.triton.args import Ports, ServerOptions


class ServerError(MmesimError):
    """Triton did not start, died, or refused something; carries the tail of its log."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        super().__init__(message + (f"\n--- tritonserver log (last lines) ---\n{log_tail}" if log_tail else ""))


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def free_ports() -> Ports:
    seen: set[int] = set()
    picked = []
    while len(picked) < 3:
        p = free_port()
        if p not in seen:
            seen.add(p)
            picked.append(p)
    return Ports(sagemaker=picked[0], http=picked[1], metrics=picked[2])


_running: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()
PORT_TRIES = 3


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        try:
            server.stop()
        except Exception:  # at exit, do what can be done
            pass


class TritonServer(ABC):
    """One Triton server. Use as a context manager: ``with LocalTriton(...) as server: ...``."""

    host = "127.0.0.1"

    def __init__(self, options: ServerOptions | None = None, ports: Ports | None = None,
                 ready_timeout_s: float = 120.0, stop_timeout_s: float = 15.0):
        self.options = options or ServerOptions()
        self.ports = ports
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s

    # --- what a runner provides -------------------------------------------------------
    @abstractmethod
    def _launch(self) -> None: ...

    @abstractmethod
    def _alive(self) -> bool: ...

    @abstractmethod
    def _terminate(self) -> None:
        """Ask politely (SIGTERM / docker stop)."""

    @abstractmethod
    def _wait_exit(self, timeout_s: float) -> bool: ...

    @abstractmethod
    def _kill(self) -> None: ...

    @abstractmethod
    def log_tail(self, lines: int = 40) -> str: ...

    @property
    def running(self) -> bool:
        """Whether the server process (or container) is still up: False once it crashed or stopped."""
        return self._alive()

    def words(self, lines: int = 30, settle_s: float = 0.0) -> str:
        """The tail of Triton's log as a person reads it: without the start-up options table,
        and the stub's traceback (logged on one line, newlines escaped) unfolded. With
        ``settle_s``: Triton may log why a request failed just after it has answered it (later
        still on a busy machine), so wait up to that long for the log to grow, and read it once
        it has stopped growing for 0.3 s."""
        tail = self.log_tail(lines + 60)
        deadline, grew_at = time.monotonic() + settle_s, None
        while time.monotonic() < deadline and (grew_at is None or time.monotonic() - grew_at < 0.3):
            time.sleep(0.05)
            now = self.log_tail(lines + 60)
            if now != tail:
                tail, grew_at = now, time.monotonic()
        kept = [line for line in tail.splitlines() if not line.startswith(("|", "+-"))]
        return "\n".join(kept[-lines:]).replace("\\n", "\n    ")

    def failure(self, doing: str, exc: BaseException) -> "ServerError":
        """A failure while talking to this server, with the server's own words attached."""
        cause = getattr(self, "numpy_problem", None)
        why = f"\nlikely cause: {cause}" if cause and "does not match size" in str(exc) else ""
        return ServerError(f"{doing} failed: {exc}{why}", self.words(settle_s=3.0))

    def model_url(self, path: str | Path) -> str:
        """The model directory as the server sees it (a container maps host paths)."""
        return str(Path(path).resolve())

    @property
    def version(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2", timeout=5) as r:
                import json
                return json.loads(r.read()).get("version")
        except (OSError, ValueError):
            return None

    # --- shared behaviour -------------------------------------------------------------
    @property
    def sagemaker_url(self) -> str:
        return f"http://{self.host}:{self.ports.sagemaker}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def start(self) -> "TritonServer":
        """Launch and wait until ready. Ports left unset are chosen free, but another process
        may take one in the seconds before Triton binds it: then Triton exits saying so, and
        it is launched again on fresh ports (three tries)."""
        chosen = self.ports is None
        if not chosen:
            busy = [p for p in (self.ports.sagemaker, self.ports.http, self.ports.metrics) if port_in_use(p)]
            if busy:
                raise ServerError(f"port(s) {', '.join(map(str, busy))} already in use: stop what listens there, "
                                  "or leave the ports unset so free ones are chosen")
        for attempt in range(1, PORT_TRIES + 1 if chosen else 2):
            if chosen:
                self.ports = free_ports()
            self._launch()
            _running.add(self)
            try:
                self.wait_ready()
                return self
            except ServerError:
                taken = chosen and attempt < PORT_TRIES and not self._alive() and "already in use" in self.log_tail(80)
                if not taken:
                    self.stop()
                    raise
                TritonServer.stop(self)       # this launch only: its work folder stays for the next
            except BaseException:
                self.stop()
                raise

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if not self._alive():
                raise ServerError("tritonserver exited during start-up", self.words())
            if self._ready():
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver not ready after {self.ready_timeout_s:.0f} s", self.words())

    def _ready(self) -> bool:
        urls = [f"{self.http_url}/v2/health/ready"]
        if self.options.sagemaker:
            urls.append(f"{self.sagemaker_url}/ping")
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status != 200:
                        return False
            except (OSError, urllib.error.HTTPError):
                return False
        return True

    def stop(self) -> None:
        """SIGTERM (Triton drains in-flight requests), wait, then kill."""
        _running.discard(self)
        if not self._alive():
            self._wait_exit(0)
            return
        self._terminate()
        if not self._wait_exit(self.stop_timeout_s):
            self._kill()
            self._wait_exit(10)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
