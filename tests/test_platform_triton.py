"""The simulator's default load parallelism, checked against a real Triton: loads asked for
at once through the SageMaker MME protocol (POST /models) run four at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mmesim.endpoint import PlatformCosts
from mmesim.errors import MissingPiece

pytestmark = pytest.mark.triton

try:
    from mmesim.triton.client import MMEClient
    from mmesim.triton.local import LocalTriton, find_tritonserver
    from mmesim.triton.modelspec import ModelSpec, TensorSpec
    from mmesim.triton.packaging import config_pbtxt
    find_tritonserver()
except (ImportError, MissingPiece):
    pytest.skip("no tritonserver (install mmesim[triton])", allow_module_level=True)

# each load sleeps this long in initialize(): longer than the spread of stub start-ups on a busy
# 2-core machine (over 6 s seen in CI), so that four loads are seen side by side
SLEEP_S = 15.0
SLEEPY = '''import time
import triton_python_backend_utils as pb_utils

LOG = {log!r}


class TritonPythonModel:
    def initialize(self, args):
        # a load that takes a known time and no CPU, with its start and end on record
        with open(LOG, "a") as fh:
            fh.write(f"{{time.time()}} 1\\n")
        time.sleep({sleep})
        with open(LOG, "a") as fh:
            fh.write(f"{{time.time()}} -1\\n")

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT__0", pb_utils.get_input_tensor_by_name(
            r, "INPUT__0").as_numpy())]) for r in requests]
'''


def most_at_once(lines: list[str]) -> int:
    """The most loads in progress at one time, from their start (+1) and end (-1) records."""
    now = peak = 0
    for _, step in sorted((float(t), int(d)) for t, d in (line.split() for line in lines)):
        now += step
        peak = max(peak, now)
    return peak


def test_triton_loads_at_most_four_models_at_a_time(tmp_path):
    """Eight loads asked for at once through the SageMaker protocol: the models' own records
    show four initialising side by side, never more (Triton's --model-load-thread-count)."""
    n = 2 * PlatformCosts().load_parallelism
    log = tmp_path / "loads.log"
    spec = ModelSpec("sleepy", (TensorSpec("INPUT__0", "FP32", (1,)),), (TensorSpec("OUTPUT__0", "FP32", (1,)),), 8)
    with LocalTriton() as server:
        urls = []
        for i in range(n):
            d = Path(server.workdir) / "models" / f"sleepy{i}" / "sleepy"
            (d / "1").mkdir(parents=True)
            (d / "1" / "model.py").write_text(SLEEPY.format(log=str(log), sleep=SLEEP_S))
            (d / "config.pbtxt").write_text(config_pbtxt(spec, "python", "cpu"))
            urls.append(server.model_url(d.parent))

        def load(i: int) -> None:
            client = MMEClient(server.sagemaker_url)
            try:
                client.load(f"sleepy{i}", urls[i])
            finally:
                client.close()

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(load, range(n)))
    lines = log.read_text().split("\n")[:-1]
    assert len(lines) == 2 * n
    assert most_at_once(lines) == PlatformCosts().load_parallelism
