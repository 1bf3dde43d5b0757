"""Start `mmesim emulate` as a real process on a free port, and stop it (SIGTERM) after."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]


def fake_artifacts(folder: Path, names: list[str]) -> Path:
    """Tarballs holding a Triton model directory (the virtual backend reads only their presence)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with tarfile.open(folder / name, "w:gz") as tar:
            data = b'backend: "python"\nmax_batch_size: 8\n'
            info = tarfile.TarInfo("model/config.pbtxt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


@contextlib.contextmanager
def emulate(*args: str, out: Path | None = None, start_timeout_s: float = 120.0):
    """Yields (url, process); the process is stopped with SIGTERM (then killed) on exit."""
    cmd = [sys.executable, "-m", "mmesim.cli", "emulate", "--port", "0", *args]
    if out is not None:
        cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, cwd=ROOT)
    lines = []
    try:
        deadline = time.monotonic() + start_timeout_s
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=(\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "emulator did not start:\n" + "".join(lines)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.output = "".join(lines) + (proc.stdout.read() if proc.stdout else "")
        proc.stdout.close()


def runtime(url: str, pool: int = 10, retries: int = 0):
    """boto3's own sagemaker-runtime client pointed at the emulator."""
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(max_pool_connections=pool, retries={"total_max_attempts": retries + 1, "mode": "standard"},
                                      read_timeout=120))


def kill_under_load(kill, call, failed, users: int, wait_s: float = 150.0) -> tuple[float, list[float]]:
    """``users`` threads call ``call()`` in a loop (``failed(exc)`` hears each failure); after a
    second ``kill()`` runs, and the load goes on until a request is served more than a second
    after the kill, or ``wait_s``. Returns when the kill happened and when requests were served."""
    stop, served = threading.Event(), []

    def user():
        while not stop.is_set():
            try:
                call()
                served.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the caller's failed() decides what a failure means
                failed(exc)
    threads = [threading.Thread(target=user) for _ in range(users)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        killed_at = time.monotonic()
        kill()
        while time.monotonic() < killed_at + wait_s and not any(t > killed_at + 1 for t in served[-users:]):
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return killed_at, served
