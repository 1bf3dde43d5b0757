"""Clients for a running Triton: the SageMaker MME container protocol (what the platform
calls inside an instance) and Triton's own KServe v2 API (statistics, inference through
tritonclient)."""

from __future__ import annotations

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


class AsyncMMEClient:
    """The same protocol on an asyncio loop (aiohttp), for the emulator's request path:
    one pooled session per server, no thread per request."""

    def __init__(self, base_url: str, timeout_s: float = 600.0, connections: int = 256):
        import aiohttp
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=timeout_s), skip_auto_headers=("User-Agent",))

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None, check: bool = True) -> Response:
        """One call; ``check`` raises MMEError on a non-2xx answer. Connection failures
        raise aiohttp.ClientError (the server is gone)."""
        start = time.perf_counter()
        async with self._session.request(method, self.base_url + path, data=body,
                                         headers={"Content-Type": "application/json", **(headers or {})}) as resp:
            data = await resp.read()
            status, content_type = resp.status, resp.headers.get("Content-Type", "")
        elapsed = time.perf_counter() - start
        if check and status >= 300:
            raise MMEError(method, path, status, data.decode(errors="replace"))
        return Response(status, data, elapsed, content_type)

    async def load(self, name: str, url: str) -> float:
        return (await self.request("POST", "/models", load_body(name, url))).seconds

    async def unload(self, name: str) -> float:
        return (await self.request("DELETE", f"/models/{name}")).seconds

    async def invoke(self, name: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        """The model's answer whatever its status (the caller maps errors)."""
        return await self.request("POST", f"/models/{name}/invoke", body, headers, check=False)

    async def close(self) -> None:
        await self._session.close()


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
