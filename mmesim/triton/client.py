"""Clients for a running Triton: the SageMaker MME container protocol (what the platform
calls inside an instance) and Triton's own KServe v2 API (statistics, inference through
tritonclient)."""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from mmesim.errors import MmesimError


class MMEError(MmesimError):
    """A non-2xx answer of the MME protocol: 404 not loaded, 409 already loaded, 507 out of memory."""

    def __init__(self, method: str, path: str, status: int, body: str):
        self.status, self.body = status, body
        meaning = {400: "bad request (e.g. a broken model)", 404: "not loaded", 409: "already loaded",
                   507: "out of memory"}.get(status, "")
        super().__init__(f"{method} {path} -> {status}{f' ({meaning})' if meaning else ''}: {body.strip()[:500]}")


def _server_failures() -> tuple[type[BaseException], ...]:
    try:
        from tritonclient.utils import InferenceServerException
    except ImportError:
        return (MMEError, http.client.HTTPException, ConnectionError, TimeoutError)
    return (MMEError, InferenceServerException, http.client.HTTPException, ConnectionError, TimeoutError)


# What a failing Triton raises in these clients: the caller attaches the server's log to it.
SERVER_FAILURES = _server_failures()


@dataclass
class Response:
    status: int
    body: bytes
    seconds: float
    content_type: str = ""

    def json(self):
        return json.loads(self.body) if self.body else None


# Requests that may be sent twice: repeating them does not repeat their effect. A failed
# ``POST /models`` (a load) or invoke is never resent, since the server may have acted on it.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """The server closed this idle keep-alive connection (its socket reads as ready: EOF)."""
    if conn.sock is None:
        return True
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class MMEClient:
    """``POST /models``, ``GET /models[/{name}]``, ``DELETE /models/{name}``,
    ``POST /models/{name}/invoke``, ``GET /ping``; one keep-alive connection per client.

    A request that fails on the wire is retried once only if it is idempotent, or if it
    provably never left (the connection could not be opened)."""

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, check: bool = True) -> Response:
        headers = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            if self._conn is not None and _dropped(self._conn):
                self.close()                # closed by the server while idle: open a new one first
            if self._conn is None:
                try:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
                    conn.connect()          # nothing is sent yet: a failure here is safe to retry
                except OSError:
                    if attempt == 2:
                        raise
                    continue
                self._conn = conn
            try:
                start = time.perf_counter()
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
                elapsed = time.perf_counter() - start
                break
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2 or method.upper() not in IDEMPOTENT:
                    raise
        if check and resp.status >= 300:
            raise MMEError(method, path, resp.status, data.decode(errors="replace"))
        return Response(resp.status, data, elapsed)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> bool:
        try:
            return self.request("GET", "/ping", check=False).status == 200
        except OSError:
            return False

    def load(self, name: str, url: str) -> float:
        """Load the model directory at ``url`` (as the server sees it) under ``name``; seconds taken."""
        return self.request("POST", "/models", load_body(name, url)).seconds

    def list(self) -> list[dict]:
        return [m for m in (self.request("GET", "/models").json() or {}).get("models", []) if m]

    def get(self, name: str) -> dict:
        return self.request("GET", f"/models/{name}").json()

    def unload(self, name: str) -> float:
        return self.request("DELETE", f"/models/{name}").seconds

    def invoke(self, name: str, body: bytes, content_type: str = "application/json") -> Response:
        return self.request("POST", f"/models/{name}/invoke", body, headers={"Content-Type": content_type})


def load_body(name: str, url: str) -> bytes:
    """The body of ``POST /models``: what the platform sends to load ``url`` as ``name``."""
    return json.dumps({"model_name": name, "url": url}).encode()


class _Exchange(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send a request, parse one response (Content-Length,
    chunked, or until close). Small on purpose: the emulator calls it on every request."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.reusable = True

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self._parse(eof=False)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self._parse(eof=True)
            if not self.waiter.done():
                self.waiter.set_exception(ConnectionResetError("the server closed the connection mid-response"))

    def _parse(self, eof: bool) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        start = end + 4
        if "content-length" in headers:
            stop = start + int(headers["content-length"])
            if len(buf) < stop:
                return
            body = bytes(buf[start:stop])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, stop = _dechunk(buf, start)
            if body is None:
                return
        elif status in (204, 304) or 100 <= status < 200:
            body, stop = b"", start
        elif eof:
            body, stop = bytes(buf[start:]), len(buf)
            self.reusable = False
        else:
            return
        del buf[:stop]
        if headers.get("connection", "").lower() == "close":
            self.reusable = False
        self.waiter.set_result((status, headers, body))

    async def exchange(self, request: bytes):
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None


def _dechunk(buf: bytearray, at: int):
    """(body, end) of a complete chunked body starting at ``at``, or (None, 0) if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[at:eol]).split(b";")[0], 16)
        at = eol + 2
        if size == 0:
            trailer = buf.find(b"\r\n\r\n", at - 2)
            return (bytes(out), trailer + 4) if trailer >= 0 else (None, 0)
        if len(buf) < at + size + 2:
            return None, 0
        out += buf[at:at + size]
        at += size + 2


class AsyncMMEClient:
    """The same protocol on an asyncio loop, for the emulator's request path: a pool of
    keep-alive connections speaking plain HTTP/1.1 (no thread and no general-purpose client
    per request: it costs a few tens of microseconds)."""

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout_s = timeout_s
        self._idle: list[_Exchange] = []
        self._host_header = f"Host: {self.host}:{self.port}\r\n"

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None, check: bool = True) -> Response:
        """One call; ``check`` raises MMEError on a non-2xx answer. A server that is gone
        raises OSError (ConnectionError)."""
        body = body or b""
        head = [f"{method} {path} HTTP/1.1\r\n", self._host_header, f"Content-Length: {len(body)}\r\n"]
        merged = {"Content-Type": "application/json", **(headers or {})}
        head += [f"{k}: {v}\r\n" for k, v in merged.items()]
        data = "".join(head).encode("latin-1") + b"\r\n" + body
        start = time.perf_counter()
        conn = None
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Exchange, self.host, self.port)
        try:
            status, resp_headers, data = await conn.exchange(data)
        except BaseException:
            conn.transport.close()
            raise
        if conn.reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.transport.close()
        elapsed = time.perf_counter() - start
        if check and status >= 300:
            raise MMEError(method, path, status, data.decode(errors="replace"))
        return Response(status, data, elapsed, resp_headers.get("content-type", ""))

    async def load(self, name: str, url: str) -> float:
        return (await self.request("POST", "/models", load_body(name, url))).seconds

    async def unload(self, name: str) -> float:
        return (await self.request("DELETE", f"/models/{name}")).seconds

    async def invoke(self, name: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        """The model's answer whatever its status (the caller maps errors)."""
        return await self.request("POST", f"/models/{name}/invoke", body, headers, check=False)

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()


def kserve_client(url: str, concurrency: int = 1):
    """tritonclient's HTTP client for Triton's KServe v2 API."""
    import tritonclient.http as httpclient
    return httpclient.InferenceServerClient(urlsplit(url).netloc, concurrency=concurrency,
                                            connection_timeout=600, network_timeout=600)


@dataclass(frozen=True)
class Timings:
    """Cumulative Triton statistics for one model (seconds); subtract two to get an interval."""

    requests: int
    executions: int
    success_s: float
    queue_s: float
    compute_input_s: float
    compute_infer_s: float
    compute_output_s: float
    by_batch: dict[int, tuple[int, float]]     # batch size -> (executions, compute seconds)

    def __sub__(self, other: "Timings") -> "Timings":
        keys = set(self.by_batch) | set(other.by_batch)
        by = {b: (self.by_batch.get(b, (0, 0.0))[0] - other.by_batch.get(b, (0, 0.0))[0],
                  self.by_batch.get(b, (0, 0.0))[1] - other.by_batch.get(b, (0, 0.0))[1]) for b in keys}
        return Timings(self.requests - other.requests, self.executions - other.executions,
                       self.success_s - other.success_s, self.queue_s - other.queue_s,
                       self.compute_input_s - other.compute_input_s, self.compute_infer_s - other.compute_infer_s,
                       self.compute_output_s - other.compute_output_s, {b: v for b, v in by.items() if v[0]})

    @property
    def compute_s(self) -> float:
        return self.compute_input_s + self.compute_infer_s + self.compute_output_s


def model_timings(client, name: str) -> Timings:
    """Read ``/v2/models/{name}/stats`` through tritonclient."""
    stats = client.get_inference_statistics(name)["model_stats"]
    inf = {k: 0.0 for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
    requests = executions = 0
    by_batch: dict[int, tuple[int, float]] = {}
    for entry in stats:
        s = entry["inference_stats"]
        for k in inf:
            inf[k] += s[k]["ns"] / 1e9
        requests += s["success"]["count"]
        executions += entry.get("execution_count", 0)
        for b in entry.get("batch_stats", []):
            n = b["compute_infer"]["count"]
            sec = (b["compute_input"]["ns"] + b["compute_infer"]["ns"] + b["compute_output"]["ns"]) / 1e9
            old = by_batch.get(b["batch_size"], (0, 0.0))
            by_batch[b["batch_size"]] = (old[0] + n, old[1] + sec)
    return Timings(requests, executions, inf["success"], inf["queue"], inf["compute_input"],
                   inf["compute_infer"], inf["compute_output"], by_batch)
