"""The simulator's default load parallelism, checked against a real Triton: loads asked for
at once through the SageMaker MME protocol (POST /models) run four at a time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mmesim.endpoint import PlatformCosts

pytestmark = pytest.mark.triton
pytest.importorskip("tritonclient")

from mmesim.triton.client import MMEClient  # noqa: E402
from mmesim.triton.modelspec import ModelSpec, TensorSpec  # noqa: E402
from mmesim.triton.packaging import config_pbtxt  # noqa: E402

# Each load records its start, then holds its load thread until the test releases it: the
# loads that can start together are counted by order of events, not by timing.
HELD = '''import os
import time
import triton_python_backend_utils as pb_utils

LOG, RELEASE = {log!r}, {release!r}


class TritonPythonModel:
    def initialize(self, args):
        with open(LOG, "a") as fh:
            fh.write("start\\n")
        deadline = time.monotonic() + 300
        while not os.path.exists(RELEASE) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(LOG, "a") as fh:
            fh.write("end\\n")

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT__0", pb_utils.get_input_tensor_by_name(
            r, "INPUT__0").as_numpy())]) for r in requests]
'''


def _wait_for(predicate, timeout_s: float = 180) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_triton_loads_at_most_four_models_at_a_time(tmp_path, triton_server):
    """Eight loads asked for through the SageMaker protocol, each held until released:
    four start (the load threads: Triton's --model-load-thread-count), a fifth only after one
    of them is released, and all eight then complete."""
    k = PlatformCosts().load_parallelism
    n = 2 * k
    log, release = tmp_path / "loads.log", tmp_path / "release"
    log.touch()
    spec = ModelSpec("held", (TensorSpec("INPUT__0", "FP32", (1,)),), (TensorSpec("OUTPUT__0", "FP32", (1,)),), 8)
    urls = []
    for i in range(n):
        d = Path(triton_server.workdir) / "models" / f"held{i}" / "held"
        (d / "1").mkdir(parents=True)
        (d / "1" / "model.py").write_text(HELD.format(log=str(log), release=str(release)))
        (d / "config.pbtxt").write_text(config_pbtxt(spec, "python", "cpu"))
        urls.append(triton_server.model_url(d.parent))
    starts = lambda: log.read_text().split().count("start")      # noqa: E731

    def load(i: int) -> None:
        client = MMEClient(triton_server.sagemaker_url)
        try:
            client.load(f"held{i}", urls[i])
        finally:
            client.close()

    client = MMEClient(triton_server.sagemaker_url)
    # One at a time, each once Triton has taken it: its HTTP threads pick new connections off
    # one queue and serve a thread's connections one after the other, and a SageMaker load
    # holds its thread until the model is in, so a burst of connections can pile onto a few
    # threads and wait there, not for a load thread (seen once: 3 of 8 reached Triton).
    registered = lambda i: f"/models/held{i}\"" in triton_server.log_path.read_text(errors="replace")  # noqa: E731
    try:
        with ThreadPoolExecutor(n) as pool:
            done = []
            for i in range(n):
                done.append(pool.submit(load, i))
                assert _wait_for(lambda: registered(i) or done[i].done()), f"Triton never took the load of held{i}"
            try:
                assert _wait_for(lambda: starts() >= k), f"only {starts()} loads started"
                time.sleep(3)                       # room for a fifth to start, were there a fifth thread
                assert starts() == k and not any(f.done() for f in done)
            finally:
                release.touch()
            for f in done:
                f.result(timeout=300)
        events = log.read_text().split()
        assert events.count("start") == events.count("end") == n
        # while the first k were held, nothing else started: the (k+1)-th start follows an end
        assert events[:k] == ["start"] * k and events[k] == "end"
    finally:
        for i in range(n):
            try:
                client.unload(f"held{i}")
            except Exception:
                pass
        client.close()
