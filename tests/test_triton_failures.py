"""What a user sees when Triton fails: the server's own words (its log, the stub's
traceback), the numpy >= 2 stub problem named with its fix, and a GPU that this
tritonserver cannot use refused before anything is measured."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy
import pytest

pytest.importorskip("tritonclient")

from mmesim.triton.client import SERVER_FAILURES, MMEClient  # noqa: E402
from mmesim.triton.local import LocalTriton, find_tritonserver, local_env, numpy_problem, stub_numpy  # noqa: E402
from mmesim.triton.args import ServerOptions  # noqa: E402
from mmesim.triton.packaging import package  # noqa: E402
from mmesim.triton.server import ServerError  # noqa: E402

pytestmark = pytest.mark.triton


CONFIG = """backend: "python"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""
RAISES = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("the model raised this")
"""
BODY = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}).encode()


def _repository(root: Path, name: str, model_py: str) -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG)
    (root / name / "1" / "model.py").write_text(model_py)
    return root


def test_a_failing_model_shows_the_stubs_traceback(tmp_path):
    repo = _repository(tmp_path / "repo", "raiser", RAISES)
    with LocalTriton() as server:
        client = MMEClient(server.sagemaker_url)
        client.load("raiser", str(repo))
        with pytest.raises(SERVER_FAILURES) as failed:
            client.invoke("raiser", BODY)
        client.close()
        error = server.failure("invoking raiser", failed.value)
    assert isinstance(error, ServerError)
    text = str(error)
    assert text.startswith("invoking raiser failed: POST /models/raiser/invoke -> 400")
    assert "--- tritonserver log (last lines) ---" in text
    # the stub's traceback from Triton's log, one frame a line (the log escapes its newlines)
    log = text.split("--- tritonserver log (last lines) ---", 1)[1]
    assert "ValueError: the model raised this" in log
    assert "\n    At:" in log and "model.py(6): execute" in log


def test_the_stubs_numpy_is_read_and_numpy_2_is_named_with_its_fix():
    env = local_env(find_tritonserver(), ServerOptions())
    assert stub_numpy(env) == numpy.__version__       # this interpreter's bin is first on the server's PATH
    message = numpy_problem("2.4.6", "/venv/bin/python")
    assert "numpy 2.4.6 in /venv/bin/python" in message and "elsize" in message
    assert "pip install 'numpy<2'" in message and "from_dlpack" in message
    assert numpy_problem("1.26.4") is None and numpy_problem(None) is None


@pytest.mark.skipif(not os.environ.get("MMESIM_NUMPY2_PYTHON"),
                    reason="set MMESIM_NUMPY2_PYTHON to a python with torch and numpy>=2 (calibration/README.md)")
def test_generated_models_serve_with_numpy_2_beside_the_stub(tmp_path, monkeypatch):
    """The failure of issue 12 reproduced and fixed: the stub imports packages from a python
    with numpy 2; mmesim's DLPack models answer, a numpy-output model fails and says why."""
    monkeypatch.setattr(sys, "executable", os.environ["MMESIM_NUMPY2_PYTHON"])
    mlp = package("tiny-mlp", "python", tmp_path / "mlp")
    numpy_out = ("import triton_python_backend_utils as pb_utils\n\n\nclass TritonPythonModel:\n"
                 "    def execute(self, requests):\n"
                 "        return [pb_utils.InferenceResponse([pb_utils.Tensor('OUTPUT__0', pb_utils.get_input_tensor_by_name("
                 "r, 'INPUT__0').as_numpy())]) for r in requests]\n")
    repo = _repository(tmp_path / "repo", "echo", numpy_out)
    with LocalTriton() as server:
        assert server.numpy_problem and "numpy 2." in server.numpy_problem
        client = MMEClient(server.sagemaker_url)
        client.load("mlp", str(mlp.extract(tmp_path / "models" / "mlp")))
        assert client.invoke("mlp", mlp.spec.request_body(3)).json()["outputs"][0]["shape"] == [3, 10]
        client.load("echo", str(repo))
        with pytest.raises(SERVER_FAILURES) as failed:
            client.invoke("echo", BODY)
        client.close()
        assert "likely cause: numpy 2." in str(server.failure("invoking echo", failed.value))


@pytest.fixture
def fake_nvml(monkeypatch):
    """An NVIDIA driver faked at its outermost edge (the pynvml module): one GPU, by default
    an 'NVIDIA L40S' of 45 GiB (in the catalogue); ``fake_nvml.name`` changes it."""
    nvml = types.ModuleType("pynvml")
    memory = types.SimpleNamespace(total=45 * 2**30, used=500 * 2**20, free=44 * 2**30)
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetMemoryInfo = lambda h: memory
    nvml.name = "NVIDIA L40S"
    nvml.nvmlDeviceGetName = lambda h: nvml.name
    nvml.nvmlSystemGetDriverVersion = lambda: "570.00"
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml


def test_a_gpu_the_catalogue_lacks_is_refused_before_the_server_starts(fake_nvml, tmp_path, capsys):
    from mmesim.cli import main
    fake_nvml.name = "NVIDIA GeForce RTX 4090"
    assert main(["calibrate", "--model", "tiny-mlp", "--device", "cuda:0", "--out", str(tmp_path / "p.json")]) != 0
    err = capsys.readouterr().err
    assert "GPU 0 is an 'NVIDIA GeForce RTX 4090' (45.0 GiB), which the catalogue does not have" in err
    assert "nothing was measured" in err and "starting tritonserver" not in err


def test_a_gpu_this_server_cannot_use_is_refused_with_tritons_reason_before_measuring(fake_nvml, tmp_path, capsys):
    """Here the driver is fake and there is no GPU: Triton itself refuses the KIND_GPU null
    model, and that reason stops calibrate before the model is even packaged."""
    import torch
    from mmesim.cli import main
    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: the null model would load")
    out = tmp_path / "p.json"
    code = main(["calibrate", "--model", "tiny-mlp", "--device", "cuda:0", "--quick", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "running a model on cuda:0 in this tritonserver failed" in err
    assert "invalid or unsupported gpu id 0" in err                   # Triton's own words
    assert "--- tritonserver log (last lines) ---" in err and "CUDA" in err.split("last lines) ---")[1]
    assert "packaging" not in err and "timing" not in err
