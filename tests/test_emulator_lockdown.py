"""`mmesim emulate` locked down (issue 14): it listens on loopback only; every refusal, from
aiohttp's parser up, is answered in SageMaker's shape with a request id and counted; no
message shows a server path; a decompression bomb is a ModelError that costs its limit once;
the request log streams to disk, so memory stays flat over a long run."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("aiohttp")
psutil = pytest.importorskip("psutil")

from bombs import PeakDisk, zeros_bomb  # noqa: E402
from conftest import make_profile  # noqa: E402
from emulator_process import emulate, fake_artifacts, kill_under_load, runtime  # noqa: E402

TARGET = "tiny-v0.tar.gz"
BODY = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}).encode()


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pid`` and its children."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


def not_loopback(sockets) -> list:
    return [s for s in sockets if s[1] not in ("127.0.0.1", "::1")]


def raw(url: str, request: bytes, timeout: float = 30) -> tuple[int, dict, bytes]:
    """Send ``request`` bytes as they are (no client library to tidy them); (status, headers, body)."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def sagemaker_error(status_headers_body) -> tuple[int, str, str]:
    """(status, __type, message) of an answer that must be in SageMaker's JSON error shape."""
    status, headers, body = status_headers_body
    assert headers.get("x-amzn-requestid"), headers
    assert headers.get("content-type", "").startswith(("application/json", "application/x-amz-json")), headers
    doc = json.loads(body)
    return status, doc.get("__type", ""), doc["message"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lockdown")
    models = fake_artifacts(tmp / "models", [TARGET])
    zeros_bomb(models / "bomb.tar.gz", 1, 2048 * 2**20)             # 2 GiB of zeros in ~2 MiB
    profile = tmp / "tiny.json"
    make_profile("tiny", load_s=0.05, s1=0.001).save(profile)
    out, cache = tmp / "out", tmp / "cache"
    with emulate("--instance", "local", "--memory-budget", "4GiB", "--models", str(models), "--profile",
                 str(profile), "--cache-dir", str(cache), out=out) as (url, proc):
        yield url, proc, models, cache, out
    assert proc.returncode == 0, proc.output
    assert "Traceback" not in proc.output, proc.output


def test_the_emulator_listens_on_loopback_only(served):
    url, proc, *_ = served
    sockets = listening(proc.pid)
    assert sockets and not not_loopback(sockets), sockets


def test_refusals_at_every_layer_answer_in_sagemakers_shape(served):
    url, proc, models, *_ = served
    port = urlparse(url).port
    client = runtime(url)
    with pytest.raises(client.exceptions.ValidationError) as err:           # a 9,000-character TargetModel
        client.invoke_endpoint(EndpointName="mmesim", TargetModel="m" * 9000, Body=BODY)
    assert "at 'targetModel' failed to satisfy constraint: Member must have length less than or equal to 1024" \
        in err.value.response["Error"]["Message"] and err.value.response["ResponseMetadata"]["RequestId"]

    head = f"POST /endpoints/mmesim/invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    huge = raw(url, (head + f"X-Amzn-SageMaker-Target-Model: {'m' * 70_000}\r\nContent-Length: 2\r\n\r\n{{}}")
               .encode())                                                   # past even the raised header limit
    status, kind, message = sagemaker_error(huge)
    assert (status, kind) == (400, "ValidationError") and "could not be read" in message

    body = os.urandom(7 * 2**20)                                            # an unsigned 7 MB body, two ways
    for framing in (f"Content-Length: {len(body)}\r\n\r\n".encode() + body,
                    b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"):
        status, headers, answer = raw(url, head.encode() + f"X-Amzn-SageMaker-Target-Model: {TARGET}\r\n".encode()
                                      + b"Connection: close\r\n" + framing)
        assert status == 413 and headers.get("x-amzn-requestid") and "exceeded 6291456 bytes" in \
            json.loads(answer)["message"]

    status, kind, message = sagemaker_error(raw(url, f"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                                      f"Connection: close\r\n\r\n".encode()))
    assert (status, kind) == (404, "UnknownOperationException") and "POST /nowhere" in message
    status, kind, _ = sagemaker_error(raw(url, b"GET /endpoints/mmesim/invocations HTTP/1.1\r\nHost: x\r\n"
                                               b"Connection: close\r\n\r\n"))                  # wrong method
    assert (status, kind) == (404, "UnknownOperationException")
    for garbage in (b"BREW /endpoints/mmesim/invocations HTTP/1.1\r\nHost: x\r\n\r\n",     # the parser refuses
                    b"POST /endpoints/mmesim/invocations HTTP/9.9\x00\r\n\r\n"):
        status, kind, _ = sagemaker_error(raw(url, garbage))
        assert (status, kind) == (400, "ValidationError")

    with pytest.raises(client.exceptions.ValidationError) as err:           # an unknown model: no server folder
        client.invoke_endpoint(EndpointName="mmesim", TargetModel="absent.tar.gz", Body=BODY)
    message = err.value.response["Error"]["Message"]
    assert "absent.tar.gz" in message and str(models) not in message and "/tmp" not in message


def test_a_2_gib_bomb_is_a_model_error_that_costs_nothing_beyond_its_limit(served):
    url, proc, models, cache, _ = served
    client = runtime(url)
    with PeakDisk(cache) as disk:
        for _ in range(3):                                                  # a retrying client
            with pytest.raises(client.exceptions.ModelError) as err:
                client.invoke_endpoint(EndpointName="mmesim", TargetModel="bomb.tar.gz", Body=BODY)
            error = err.value.response["Error"]
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
            assert "unpacks to more than" in error["Message"] and "--max-unpack-ratio" in error["Message"]
    packed = (models / "bomb.tar.gz").stat().st_size
    assert disk.peak <= max(100 * packed, 64 * 2**20), disk.peak           # its limit at most (here: nothing)
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert not [p for p in leftovers if "bomb" in str(p)], leftovers


def test_every_refusal_is_in_the_summary(served):
    """Runs last in the module: stop the emulator and read what it wrote."""
    url, proc, _, _, out = served
    client = runtime(url)
    before = json.loads(urllib.request.urlopen(url + "/metrics.json").read())
    ok = client.invoke_endpoint(EndpointName="mmesim", TargetModel=TARGET, ContentType="application/json", Body=BODY)
    assert ok["ResponseMetadata"]["HTTPStatusCode"] == 200
    # naming no endpoint the parser could read: /nowhere, GET, BREW, HTTP/9.9, the 70,000-byte header
    assert sum(before["unrouted_refusals"].values()) >= 5, before["unrouted_refusals"]
    proc.send_signal(__import__("signal").SIGTERM)
    proc.wait(timeout=60)
    summary = json.loads((out / "summary.json").read_text())
    # in the endpoint's log: the long TargetModel, 2 x 413, the unknown model, 3 x the bomb, and 1 answered
    assert summary["requests"] == 8 and summary["failures"] == 7, summary


async def _blast(url: str, n: int, concurrency: int = 32) -> int:
    """Send ``n`` InvokeEndpoint requests over ``concurrency`` keep-alive connections; how many got 200."""
    import aiohttp
    ok = 0
    left = iter(range(n))
    headers = {"X-Amzn-SageMaker-Target-Model": TARGET, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            nonlocal ok
            for _ in left:
                async with session.post(url + "/endpoints/mmesim/invocations", data=BODY, headers=headers) as r:
                    await r.read()
                    ok += r.status == 200
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def test_memory_stays_flat_over_a_long_run(tmp_path):
    """RSS after N and after 2N requests: the request log of N more requests (28 bytes each in
    memory, before it streamed) must not show; the summary still counts every one."""
    models = fake_artifacts(tmp_path / "models", [TARGET])
    profile = tmp_path / "tiny.json"
    make_profile("tiny", load_s=0.05, s1=0.0002).save(profile)
    n, warm = int(os.environ.get("MMESIM_TEST_FLAT_N", "40000")), 10_000
    with emulate("--instance", "local", "--memory-budget", "4GiB", "--models", str(models), "--profile",
                 str(profile), "--max-inflight", "1000", out=tmp_path / "out") as (url, proc):
        emulator = psutil.Process(proc.pid)
        rss = []
        for count in (warm, n, n):
            assert asyncio.run(_blast(url, count)) == count
            time.sleep(0.5)
            rss.append(emulator.memory_info().rss)
    grown = rss[2] - rss[1]
    print(f"RSS after warm-up, +{n}, +{n}: {[r // 1024 for r in rss]} KiB; last step grew {grown / n:.1f} B/request")
    assert grown < n * 12, f"RSS grew {grown} bytes over {n} requests ({grown / n:.1f} per request)"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"] == warm + 2 * n and summary["failures"] == 0


# --- a real tritonserver behind the emulator ----------------------------------------------------
def _triton_or_skip():
    from mmesim.errors import MissingPiece
    from mmesim.triton.local import find_tritonserver
    try:
        find_tritonserver()
    except MissingPiece:
        pytest.skip("no tritonserver (install mmesim[triton])")


def leftovers(pid: int, tmp_dir: Path | None = None) -> list[str]:
    """What a server started by mmesim process ``pid`` may leave: shared memory, work folders."""
    import tempfile
    shm = [p.name for p in Path("/dev/shm").glob(f"mmesim_triton_{pid}_*")]
    tmp = [p.name for p in Path(tmp_dir or tempfile.gettempdir()).glob(f"mmesim-*-{pid}-*")]
    return shm + tmp


@pytest.mark.triton
def test_a_killed_triton_leaves_nothing_and_every_port_is_on_loopback(tmp_path, monkeypatch):
    _triton_or_skip()
    private = tmp_path / "tmp"          # its own temp folder: what is gone at the end, it removed itself
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))

    from mmesim.triton.packaging import package_copies
    from mmesim.triton.zoo import builtin
    models = tmp_path / "models"
    package_copies("tiny-mlp", "python", models, 1, cpu_threads=1)
    target = sorted(p.name for p in models.iterdir())[0]
    body = builtin("tiny-mlp")[0].request_body(1)
    profile = tmp_path / "tiny-mlp.json"
    make_profile("tiny-mlp", mem_mib=300, gpu="cpu").save(profile)
    with emulate("--instance", "local", "--backend", "triton", "--memory-budget", "4GiB", "--models", str(models),
                 "--profile", str(profile)) as (url, proc):
        client = runtime(url, pool=4)

        def call():
            return client.invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json",
                                          Body=body)
        call()
        sockets = listening(proc.pid)
        assert {name for name, *_ in sockets} >= {"tritonserver"} and len(sockets) >= 4, sockets
        assert not not_loopback(sockets), sockets                     # Triton's SageMaker port included
        regions = [p for p in Path("/dev/shm").glob(f"mmesim_triton_{proc.pid}_*")]
        assert regions, "the Python backend's shared memory does not carry our prefix"

        (triton,) = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "tritonserver"]
        # failures while it restarts are test_emulator_triton's subject
        killed_at, served_after = kill_under_load(triton.kill, call, lambda exc: time.sleep(0.05), users=3)
        assert served_after and served_after[-1] > killed_at + 1, "not served again after the restart"
        assert not [r for r in regions if r.exists()], "the killed server's shared memory is still there"
        assert not not_loopback(listening(proc.pid))                  # the restarted server too
    assert proc.returncode == 0, proc.output
    assert leftovers(proc.pid, private) == []


@pytest.mark.triton
def test_what_a_crashed_emulator_left_is_removed_by_the_next(tmp_path, monkeypatch):
    _triton_or_skip()
    private = tmp_path / "tmp"          # a temp folder of its own: no other mmesim on the machine sweeps it first
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    from mmesim.triton.packaging import package_copies
    from mmesim.triton.zoo import builtin
    models = tmp_path / "models"
    package_copies("tiny-mlp", "python", models, 1, cpu_threads=1)
    target = sorted(p.name for p in models.iterdir())[0]
    profile = tmp_path / "tiny-mlp.json"
    make_profile("tiny-mlp", mem_mib=300, gpu="cpu").save(profile)
    args = ("--instance", "local", "--backend", "triton", "--memory-budget", "4GiB", "--models", str(models),
            "--profile", str(profile))
    with emulate(*args) as (url, proc):
        runtime(url).invoke_endpoint(EndpointName="mmesim", TargetModel=target, ContentType="application/json",
                                     Body=builtin("tiny-mlp")[0].request_body(1))
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()                                                   # the emulator crashes
        proc.wait()
        _, alive = psutil.wait_procs(children, timeout=60)            # Triton follows it (PR_SET_PDEATHSIG)
        assert not alive, f"still running after the emulator died: {alive}"
        left = leftovers(proc.pid, private)
        assert {name.split("-")[1] for name in left} >= {"emulate", "triton"}, left
    with emulate(*args) as (url, second):
        still = leftovers(proc.pid, private)
        assert still == [], f"the next emulator did not clean up after the crashed one: {still} (had {left})"
    assert leftovers(second.pid, private) == [], (second.returncode, second.output[-3000:])


def test_locust_web_ui_and_master_listen_on_loopback_only(tmp_path):
    """A distributed load test with its web UI: every socket the Locust processes listen on."""
    import subprocess
    import sys
    import threading

    from mmesim.loadtest import run_loadtest
    from mmesim.profile import load_profile
    from mmesim.workload import Workload
    here = Path(__file__).parent
    port_file = tmp_path / "port"
    stub = subprocess.Popen([sys.executable, str(here / "stub_endpoint.py"), str(port_file), "0.005"])
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ui_port = s.getsockname()[1]
        wl = Workload(kind="users", stages=[{"end_s": 5, "users": 2, "spawn_rate": 2}], wait_s=(0.05, 0.1))
        profile = load_profile(here.parent / "calibration" / "profiles" / "tiny-mlp-python-cpu.json")
        done = threading.Thread(target=run_loadtest, args=(f"http://127.0.0.1:{port_file.read_text()}", None, wl,
                                                            [profile], [2], tmp_path / "out"),
                                kwargs=dict(workers=1, protocol="triton", web_ui=ui_port))
        done.start()
        seen = set()
        while done.is_alive():
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "locust" in " ".join(proc.cmdline()):
                        seen |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                                 if c.status == psutil.CONN_LISTEN}
                except psutil.Error:
                    pass
            time.sleep(0.2)
        done.join()
    finally:
        stub.terminate()
        stub.wait(10)
    assert ("127.0.0.1", ui_port) in seen and len(seen) >= 2, seen          # the web UI and the master's port
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in seen), seen


def test_the_loopback_library_moves_wildcard_binds_only(monkeypatch):
    """What keeps Triton's SageMaker port (hard-wired to 0.0.0.0) on loopback, in a real process."""
    import subprocess
    import sys

    from mmesim.triton.args import Ports, ServerOptions, server_args
    from mmesim.triton.local import _loopback_env
    from mmesim.triton.loopback import NoCompiler, preload_library
    try:
        library = preload_library()
    except NoCompiler as exc:
        pytest.skip(str(exc))
    script = ("import socket\n"
              "for host in ('0.0.0.0', '127.0.0.1', ''):\n"
              "    s = socket.socket(); s.bind((host, 0)); print(s.getsockname()[0])\n")
    env = {**os.environ, "LD_PRELOAD": str(library)}
    shown = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["127.0.0.1"] * 3
    assert _loopback_env(ServerOptions())["LD_PRELOAD"].startswith(str(library))
    monkeypatch.setenv("MMESIM_TRITON_ADDRESS", "0.0.0.0")             # the user asks for every interface
    asked = ServerOptions()
    assert "--http-address=0.0.0.0" in server_args(asked, Ports()) and _loopback_env(asked) == {}


def test_signature_refusals_are_worded_as_aws_and_counted(tmp_path):
    """With --auth: a request dated 20 minutes ahead, an unsigned 7 MB body (refused while the
    signature check reads it), both in SageMaker's shape and in the endpoint's summary."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    models = fake_artifacts(tmp_path / "models", [TARGET])
    profile = tmp_path / "tiny.json"
    make_profile("tiny", load_s=0.05, s1=0.001).save(profile)
    with emulate("--instance", "local", "--memory-budget", "4GiB", "--models", str(models), "--profile", str(profile),
                 "--auth", "AKIDLOCAL:s3cret", out=tmp_path / "out") as (url, proc):
        port = urlparse(url).port
        req = botocore.awsrequest.AWSRequest(method="POST", url=f"{url}/endpoints/mmesim/invocations", data=BODY,
                                             headers={"Content-Type": "application/json",
                                                      "X-Amzn-SageMaker-Target-Model": TARGET})
        ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=20)
        import unittest.mock
        with unittest.mock.patch("botocore.auth.get_current_datetime", lambda: ahead.replace(tzinfo=None)):
            # signed as a client whose clock is 20 minutes fast
            botocore.auth.SigV4Auth(botocore.credentials.Credentials("AKIDLOCAL", "s3cret"), "sagemaker",
                                    "us-east-1").add_auth(req)
        head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        status, kind, message = sagemaker_error(raw(url, (f"POST /endpoints/mmesim/invocations HTTP/1.1\r\n"
                                                          f"Host: 127.0.0.1:{port}\r\n{head}Content-Length: "
                                                          f"{len(BODY)}\r\nConnection: close\r\n\r\n").encode() + BODY))
        assert (status, kind) == (403, "InvalidSignatureException")
        assert message.startswith("Signature not yet current: ") and "is still later than" in message \
            and message.endswith(" + 15 min.)"), message
        big = os.urandom(7 * 2**20)
        status, headers, answer = raw(url, (f"POST /endpoints/mmesim/invocations HTTP/1.1\r\nHost: x\r\n"
                                            f"X-Amzn-SageMaker-Target-Model: {TARGET}\r\nContent-Length: {len(big)}\r\n"
                                            "Connection: close\r\n\r\n").encode() + big)
        assert status == 413 and headers.get("x-amzn-requestid") and json.loads(answer)["message"].startswith(
            "HTTP content length exceeded")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"] == 2 and summary["failures"] == 2


@pytest.mark.parametrize("flag, value, why", [("--max-unpack-ratio", "0.5", "must be at least 1"),
                                              ("--max-model-bytes", "lots", "expected a size"),
                                              ("--max-model-bytes", "0", "")])
def test_bad_extraction_limits_are_one_line_before_anything_listens(tmp_path, flag, value, why):
    import subprocess
    import sys
    profile = tmp_path / "tiny.json"
    make_profile("tiny").save(profile)
    done = subprocess.run([sys.executable, "-m", "mmesim.cli", "emulate", "--instance", "local", "--models",
                           str(tmp_path), "--profile", str(profile), "--port", "0", flag, value],
                          capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and flag in lines[0] and why in lines[0], lines


def test_the_streamed_request_log_reads_back_what_was_written(tmp_path, monkeypatch):
    from mmesim.emulator import requestlog
    from mmesim.results.records import OK, VALIDATION, RequestRecord
    monkeypatch.setattr(requestlog, "MAX_NAMES", 5)
    log = requestlog.RequestLog(tmp_path / "log")
    written = [RequestRecord(i * 0.5, i * 0.5 + 0.01 * (i % 7), f"m{i % 9}", i % 3 - 1, OK if i % 4 else VALIDATION,
                             i % 5 == 0) for i in range(3 * requestlog.CHUNK + 17)]     # chunks and a remainder
    for rec in written:
        log.add(rec)
    assert len(log) == len(written) and len(list((tmp_path / "log").iterdir())) == 6
    back = list(log.records())
    log.close()
    assert len(back) == len(written)
    # past MAX_NAMES distinct names, new names share one (a stream of random refused names stays bounded)
    expect = [r if int(r.model[1:]) < 5 else RequestRecord(r.start, r.end, requestlog.OTHER, r.instance, r.outcome,
                                                           r.cold) for r in written]
    assert back == expect
