"""Packaging models for Triton / SageMaker MME (no server needed)."""

from __future__ import annotations

import tarfile

import pytest

pytest.importorskip("torch")

from mmesim.errors import ConfigError, MissingPiece  # noqa: E402
from mmesim.triton.args import Ports, ServerOptions, server_args, server_env  # noqa: E402
from mmesim.triton.modelspec import TensorSpec  # noqa: E402
from mmesim.triton.packaging import package, resolve  # noqa: E402


def test_server_args_switch_on_sagemaker_mme():
    args = server_args(ServerOptions(backend_directory="/b"), Ports(sagemaker=1, http=2, metrics=3))
    assert "--allow-sagemaker=true" in args and "--sagemaker-port=1" in args and "--http-port=2" in args
    assert "--model-control-mode=explicit" in args and "--backend-directory=/b" in args
    assert server_env(ServerOptions()) == {"SAGEMAKER_MULTI_MODEL": "true"}
    assert "--http-address=127.0.0.1" in args and "--metrics-address=127.0.0.1" in args    # loopback by default


def test_python_package_has_model_dir_at_top_of_tarball(tmp_path):
    pm = package("tiny-mlp", "python", tmp_path, cpu_threads=1)
    config = (pm.directory / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "max_batch_size: 16" in config
    assert 'name: "INPUT__0" data_type: TYPE_FP32 dims: [ 64 ]' in config
    assert 'name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 10 ]' in config
    assert "dynamic_batching" in config and "KIND_CPU" in config and '"cpu_threads"' in config
    with tarfile.open(pm.artifact) as tar:
        names = set(tar.getnames())
    assert {"tiny-mlp/config.pbtxt", "tiny-mlp/1/model.py", "tiny-mlp/1/model.pt"} <= names
    assert pm.artifact_bytes > 1_000_000       # 1.1M FP32 parameters


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device faked at torch's edge: torch says one is there, and moving a module or a
    tensor to it records the device asked for and leaves the data on the CPU."""
    import torch
    asked = []
    module_to, tensor_to = torch.nn.Module.to, torch.Tensor.to

    def on_cpu(args, kwargs):
        device = kwargs.get("device", args[0] if args else None)
        if isinstance(device, (str, torch.device)) and str(device).startswith("cuda"):
            asked.append(str(device))
            if "device" in kwargs:
                return args, {**kwargs, "device": "cpu"}
            return ("cpu", *args[1:]), kwargs
        return args, kwargs

    def fake_module_to(self, *args, **kwargs):
        args, kwargs = on_cpu(args, dict(kwargs))
        return module_to(self, *args, **kwargs)

    def fake_tensor_to(self, *args, **kwargs):
        args, kwargs = on_cpu(args, dict(kwargs))
        return tensor_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", fake_module_to)
    monkeypatch.setattr(torch.Tensor, "to", fake_tensor_to)
    return asked


def test_cuda_without_a_cuda_torch_is_refused_before_any_file(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match=r"--device.*cuda:0.*sees no CUDA device"):
        package("tiny-mlp", "python", tmp_path / "out", device="cuda:0")
    assert not (tmp_path / "out" / "tiny-mlp" / "config.pbtxt").exists()


def test_packager_traces_on_the_requested_device(tmp_path, fake_cuda):
    pm = package("tiny-bert", "python", tmp_path / "pt", device="cuda:1")
    # the module and every example input of the trace and its checks went to the device asked for
    assert fake_cuda and set(fake_cuda) == {"cuda:1"}
    assert fake_cuda.count("cuda:1") >= 1 + 2 * 3      # module, then two inputs at batch 2, 1 and 16
    assert "KIND_GPU gpus: [ 1 ]" in (pm.directory / "config.pbtxt").read_text()


def test_a_trace_that_bakes_in_its_batch_is_refused(tmp_path):
    f = tmp_path / "baked.py"
    f.write_text("import torch\nINPUTS = ['x:FP32:8']\nMAX_BATCH_SIZE = 4\n"
                 "class Baked(torch.nn.Module):\n"
                 "    def forward(self, x):\n"
                 "        return x.reshape(int(x.shape[0]), 8) * 2    # int(): the traced batch becomes a constant\n"
                 "def build_model():\n    return Baked()\n")
    with pytest.raises(ConfigError, match=r"the trace does not hold at batch 1 on cpu"):
        package(str(f), "python", tmp_path / "out")


def test_pytorch_and_onnx_packages(tmp_path, fake_cuda):
    pt = package("tiny-bert", "pytorch", tmp_path / "pt", device="cuda:0")
    config = (pt.directory / "config.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in config and "KIND_GPU gpus: [ 0 ]" in config
    assert "TYPE_INT32" in config and (pt.directory / "1" / "model.pt").is_file()
    pytest.importorskip("onnx")
    ox = package("tiny-cnn", "onnx", tmp_path / "onnx")
    assert 'platform: "onnxruntime_onnx"' in (ox.directory / "config.pbtxt").read_text()
    spec, source = resolve(str(ox.directory / "1" / "model.onnx"))
    assert source.kind == "onnx" and spec.inputs[0].dims == (3, 64, 64) and spec.outputs[0].dims == (10,)


def test_tensorrt_without_gpu_says_what_is_missing(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(MissingPiece, match="(tensorrt|GPU)"):
        package("tiny-mlp", "tensorrt", tmp_path)


def test_user_python_file(tmp_path):
    f = tmp_path / "my_net.py"
    f.write_text("import torch\nINPUTS = ['x:FP32:8']\nMAX_BATCH_SIZE = 4\n"
                 "def build_model():\n    return torch.nn.Linear(8, 3)\n")
    pm = package(str(f), "python", tmp_path / "out")
    assert pm.spec.name == "my-net" and pm.spec.max_batch_size == 4
    assert pm.spec.outputs[0].dims == (3,)


def test_torchscript_file_needs_inputs(tmp_path):
    import torch
    f = tmp_path / "net.pt"
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(f))
    with pytest.raises(ConfigError, match="needs its inputs"):
        package(str(f), "pytorch", tmp_path / "out")
    pm = package(str(f), "pytorch", tmp_path / "out", inputs=["INPUT__0:FP32:4"])
    assert pm.spec.outputs[0].dims == (2,)


@pytest.mark.parametrize("model, message", [
    ("no-such-model", "not a built-in model"),
    ("missing.onnx", "no such model file"),
])
def test_bad_model_names(tmp_path, model, message):
    with pytest.raises(ConfigError, match=message):
        package(model, "python", tmp_path)


def test_bad_inputs_and_files(tmp_path):
    with pytest.raises(ConfigError, match="NAME:DTYPE"):
        TensorSpec.parse("INPUT__0:FP32")
    with pytest.raises(ConfigError, match="unsupported data type"):
        TensorSpec.parse("x:COMPLEX:3")
    f = tmp_path / "broken.py"
    f.write_text("raise ValueError('oops')\n")
    with pytest.raises(ConfigError, match=r"broken.py: importing it failed: ValueError: oops"):
        package(str(f), "python", tmp_path / "out")
    g = tmp_path / "nobuild.py"
    g.write_text("INPUTS = ['x:FP32:3']\n")
    with pytest.raises(ConfigError, match="no build_model"):
        package(str(g), "python", tmp_path / "out")
    with pytest.raises(ConfigError, match="framework"):
        package("tiny-mlp", "tensorflow", tmp_path / "out")


def test_request_body_is_kserve_v2_json():
    import json
    spec, _ = resolve("resnet50")
    body = json.loads(spec.request_body(1))
    (tensor,) = body["inputs"]
    assert tensor["name"] == "INPUT__0" and tensor["shape"] == [1, 3, 224, 224] and tensor["datatype"] == "FP32"
    assert len(tensor["data"]) == 3 * 224 * 224
    assert 2_500_000 < len(spec.request_body(1)) < 3_500_000     # "about 3 MB of JSON", as in the reference


@pytest.mark.parametrize("argv, message", [
    (["--trt-profile", "1,8,8"], "max must be at least the max batch (16)"),
    (["--trt-profile", "4,2,32"], "need 1 <= min <= opt <= max"),
    (["--trt-profile", "1,16"], "expected MIN,OPT,MAX"),
    (["--warmup-batch", "64"], "field '--warmup-batch'"),
])
def test_tensorrt_profile_and_warm_up_are_checked_before_any_build(tmp_path, capsys, argv, message):
    from mmesim.cli import main
    assert main(["package", "--model", "tiny-mlp", "--framework", "tensorrt", "--out", str(tmp_path), *argv]) != 0
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
