"""Package a model the way a SageMaker MME with Triton needs it: a Triton model directory
(config.pbtxt + version 1) and ``model.tar.gz`` with that directory at its top.

Sources: a built-in name (mmesim.triton.zoo), a Python file defining ``build_model()``, a
TorchScript file, or an ONNX file. Formats: ``python`` (Python backend running TorchScript:
what runs on the CPU-only tritonserver of nvidia-pytriton), ``pytorch`` (pytorch_libtorch),
``onnx`` (onnxruntime) and ``tensorrt`` (a plan built on the GPU).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import tarfile
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from mmesim.errors import ConfigError, MissingPiece
from mmesim.serde import check_out_folder
from mmesim.triton.modelspec import ModelSpec, TensorSpec
from mmesim.triton.zoo import BUILTINS, builtin

FRAMEWORKS = ("python", "pytorch", "onnx", "tensorrt")
PLATFORM = {"python": 'backend: "python"', "pytorch": 'platform: "pytorch_libtorch"',
            "onnx": 'platform: "onnxruntime_onnx"', "tensorrt": 'platform: "tensorrt_plan"'}
FILENAME = {"python": "model.pt", "pytorch": "model.pt", "onnx": "model.onnx", "tensorrt": "model.plan"}


@dataclass
class PackagedModel:
    """A packaged model: its directory, its artifact, and what it takes."""

    spec: ModelSpec
    framework: str
    directory: Path              # <out>/<name>/ (config.pbtxt, 1/...)
    artifact: Path               # <out>/model.tar.gz
    in_python: bool = False      # served by a generated model in the Python backend (one stub process per copy)

    @property
    def artifact_bytes(self) -> int:
        return self.artifact.stat().st_size

    def extract(self, into: Path) -> Path:
        """Unpack the artifact into ``into`` (as SageMaker does under /opt/ml/models/<hash>/model);
        the returned folder is the URL to load."""
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.artifact) as tar:
            tar.extractall(into, filter="data")
        return into


@dataclass
class Source:
    """Where the weights come from: a torch module, a TorchScript file or an ONNX file."""

    kind: str                    # module | torchscript | onnx
    value: Any


# --- reading the model ----------------------------------------------------------------------
TORCHSCRIPT_FILES = (".pt", ".pth", ".ts", ".torchscript")
MODEL_FILES = (".py", *TORCHSCRIPT_FILES, ".onnx")


def check_model(model: str) -> None:
    """A ConfigError if ``model`` is neither a built-in name nor a model file; nothing is read
    or built, so that a misspelt name fails before a server starts."""
    path = Path(model)
    if model in BUILTINS or (path.suffix in MODEL_FILES and path.is_file()):   # no name has a suffix
        return
    if path.suffix or "/" in model:
        raise ConfigError("no such model file (expected a .py, .pt/.ts TorchScript or .onnx file)", field="--model",
                          value=model)
    builtin(model)   # raises with the list of names


def resolve(model: str, inputs: list[str] | None = None, max_batch_size: int | None = None) -> tuple[ModelSpec, Source]:
    """A built-in name or a file (.py with build_model(), .pt/.ts TorchScript, .onnx)."""
    check_model(model)
    path = Path(model)
    if model in BUILTINS:
        spec, build = builtin(model)
        source = Source("module", build)
    elif path.suffix == ".py":
        spec, source = _from_python_file(path, inputs)
    elif path.suffix in TORCHSCRIPT_FILES:
        if not inputs:
            raise ConfigError("a TorchScript file needs its inputs: --input NAME:DTYPE:D1,D2,... (one per input)",
                              source=str(path))
        spec = ModelSpec(_name_of(path), tuple(TensorSpec.parse(t) for t in inputs), ())
        source = Source("torchscript", path)
    else:
        spec, source = _from_onnx(path)
    if inputs and source.kind != "torchscript":
        spec = replace(spec, inputs=tuple(TensorSpec.parse(t) for t in inputs))
    if max_batch_size is not None:
        if max_batch_size < 1:
            raise ConfigError("must be at least 1", field="--max-batch", value=max_batch_size)
        spec = replace(spec, max_batch_size=max_batch_size,
                       preferred_batch_sizes=tuple(b for b in spec.preferred_batch_sizes if b <= max_batch_size))
    return spec, source


def _name_of(path: Path) -> str:
    return path.stem.replace("_", "-").lower() if path.stem not in ("model", "module") else path.parent.name or "model"


def _from_python_file(path: Path, inputs: list[str] | None) -> tuple[ModelSpec, Source]:
    """A Python file with ``build_model()`` (returns a torch.nn.Module), ``INPUTS`` (list of
    "NAME:DTYPE:D1,D2") and optionally ``MAX_BATCH_SIZE``."""
    module_spec = importlib.util.spec_from_file_location(f"mmesim_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"importing it failed: {type(exc).__name__}: {exc}", source=str(path)) from None
    if not callable(getattr(module, "build_model", None)):
        raise ConfigError("defines no build_model() returning a torch.nn.Module", source=str(path))
    declared = inputs or getattr(module, "INPUTS", None)
    if not declared:
        raise ConfigError("no inputs: define INPUTS = ['INPUT__0:FP32:3,224,224', ...] or pass --input",
                          source=str(path))
    spec = ModelSpec(getattr(module, "NAME", _name_of(path)), tuple(TensorSpec.parse(t) for t in declared), (),
                     int(getattr(module, "MAX_BATCH_SIZE", 32)), tuple(getattr(module, "PREFERRED_BATCH_SIZES", ())))
    return spec, Source("module", module.build_model)


def _from_onnx(path: Path) -> tuple[ModelSpec, Source]:
    try:
        import onnx
    except ImportError:
        raise MissingPiece("reading an ONNX file needs the 'onnx' package: pip install 'mmesim[triton]'") from None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ConfigError(f"not a readable ONNX model: {exc}", source=str(path)) from None
    names = {1: "FP32", 10: "FP16", 6: "INT32", 7: "INT64"}
    init = {i.name for i in graph.initializer}

    def specs(values):
        out = []
        for v in values:
            if v.name in init:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value for d in t.shape.dim]
            if t.elem_type not in names or len(dims) < 2 or any(d < 1 for d in dims[1:]):
                raise ConfigError(f"tensor {v.name}: need a batch dimension first and fixed other dimensions, "
                                  f"with type FP32/FP16/INT32/INT64", source=str(path))
            out.append(TensorSpec(v.name, names[t.elem_type], tuple(dims[1:])))
        return tuple(out)

    return ModelSpec(_name_of(path), specs(graph.input), specs(graph.output)), Source("onnx", path)


# --- converting ------------------------------------------------------------------------------
def torch_device(device: str):
    """The torch device a model is traced on: the one it will run on, so that constants a
    trace bakes in (an SDPA attention bias, a buffer made in forward) live there too."""
    import torch
    if device != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"torch {torch.__version__} sees no CUDA device here (torch.cuda.is_available() is False), "
                          "so the model cannot be traced where it will run; install a CUDA build of torch on the GPU "
                          "host, or use --device cpu", field="--device", value=device)
    return torch.device(device)


def _torchscript(spec: ModelSpec, source: Source, device: str = "cpu"):
    """The model as TorchScript on ``device``: loaded there, or traced there and checked."""
    import torch
    where = torch_device(device)
    if source.kind == "torchscript":
        try:
            return torch.jit.load(str(source.value), map_location=where).eval()
        except Exception as exc:
            raise ConfigError(f"not a loadable TorchScript file: {exc}", source=str(source.value)) from None
    try:
        module = source.value()
    except Exception as exc:
        raise ConfigError(f"building the model failed: {type(exc).__name__}: {exc}", field="--model",
                          value=spec.name) from None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError("build_model() did not return a torch.nn.Module", field="--model", value=spec.name)
    module = module.eval().to(where)
    example = _sample(spec, min(2, spec.max_batch_size), where)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(module, example, check_trace=False)
        except Exception as exc:
            raise ConfigError(f"tracing the model with inputs {[t.dims for t in spec.inputs]} on {device} failed: "
                              f"{type(exc).__name__}: {str(exc)[:300]}", field="--model", value=spec.name) from None
    _check_trace(spec, module, traced, where, [str(w.message) for w in caught])
    return traced


def _sample(spec: ModelSpec, batch: int, where) -> tuple:
    import torch
    return tuple(torch.from_numpy(a).to(where) for a in spec.sample(batch))


def _check_trace(spec: ModelSpec, module, traced, where, tracer_warnings: list[str]) -> None:
    """The trace must give what the module gives at batch sizes other than the traced one
    (1 and the max batch): a shape or device baked in shows up here, not at serving time."""
    import torch
    for batch in sorted({1, spec.max_batch_size}):
        inputs = _sample(spec, batch, where)
        try:
            with torch.no_grad():
                want, got = module(*inputs), traced(*inputs)
            _check_same(want, got, "the module's")
        except Exception as exc:
            said = f"; the tracer warned: {' | '.join(dict.fromkeys(tracer_warnings))[:600]}" if tracer_warnings else ""
            raise ConfigError(f"the trace does not hold at batch {batch} on {where}: {type(exc).__name__}: "
                              f"{str(exc)[:300]}{said}", field="--model", value=spec.name) from None


def _check_same(want, got, whose: str) -> None:
    """ValueError unless ``got`` (tensors) has the outputs ``want`` has: count, shapes, values."""
    import torch
    want = want if isinstance(want, (tuple, list)) else (want,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    bad = [i for i, (w, g) in enumerate(zip(want, got))
           if tuple(w.shape) != tuple(g.shape)
           or not torch.allclose(w.float().cpu(), g.float().cpu(), rtol=1e-3, atol=1e-4)]
    if len(want) != len(got) or bad:
        raise ValueError(f"outputs {bad or 'count'} differ from {whose}")


def _with_outputs(spec: ModelSpec, scripted, device: str = "cpu") -> ModelSpec:
    """Output names and shapes from running one sample through the model."""
    import torch
    with torch.inference_mode():
        try:
            out = scripted(*_sample(spec, 1, torch.device(device)))
        except Exception as exc:
            raise ConfigError(f"running one sample with inputs {[f'{t.name}:{t.dtype}:{t.dims}' for t in spec.inputs]} "
                              f"failed: {type(exc).__name__}: {str(exc)[:300]}", field="--model", value=spec.name) from None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    dtype = {torch.float32: "FP32", torch.float16: "FP16", torch.int32: "INT32", torch.int64: "INT64"}
    return replace(spec, outputs=tuple(TensorSpec(f"OUTPUT__{i}", dtype.get(o.dtype, "FP32"), tuple(o.shape[1:]) or (1,))
                                       for i, o in enumerate(outs)))


def _export_onnx(spec: ModelSpec, scripted, path: Path, device: str = "cpu") -> None:
    import torch
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise MissingPiece("ONNX export needs the 'onnx' package: pip install 'mmesim[triton]'") from None
    example = _sample(spec, 1, torch.device(device))
    names_in, names_out = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    axes = {n: {0: "batch"} for n in names_in + names_out}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(scripted, example, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    _check_onnx(spec, scripted, path, torch.device(device), [str(w.message) for w in caught])


def _check_onnx(spec: ModelSpec, scripted, path: Path, where, export_warnings: list[str]) -> None:
    """The exported graph must give what the TorchScript gives at batch 1 and the max batch
    (onnxruntime on the CPU; skipped without onnxruntime): a batch baked in shows up here."""
    try:
        import onnxruntime
    except ImportError:
        return
    import torch
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in sorted({1, spec.max_batch_size}):
        arrays = spec.sample(batch)
        try:
            got = session.run(None, {t.name: a for t, a in zip(spec.inputs, arrays)})
            with torch.no_grad():
                want = scripted(*(torch.from_numpy(a).to(where) for a in arrays))
            _check_same(want, [torch.from_numpy(g) for g in got], "the TorchScript's")
        except Exception as exc:
            said = f"; the exporter warned: {' | '.join(dict.fromkeys(export_warnings))[:600]}" if export_warnings else ""
            raise ConfigError(f"the ONNX export does not hold at batch {batch}: {type(exc).__name__}: "
                              f"{str(exc)[:300]}{said}", field="--model", value=spec.name) from None


def config_pbtxt(spec: ModelSpec, framework: str, device: str = "cpu", instance_count: int = 1,
                 max_queue_delay_us: int = 0, cpu_threads: int | None = None, in_python: bool = False,
                 warmup_batch: int | None = None) -> str:
    """The model's config.pbtxt (no name: Triton takes the name the model is loaded under);
    ``in_python``: served by a generated model in the Python backend, whatever the format;
    ``warmup_batch``: Triton runs one batch of random data at load, before it reports ready."""
    in_python = in_python or framework == "python"
    def tensors(ts):
        return ",\n".join(f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ {", ".join(map(str, t.dims))} ] }}'
                          for t in ts)
    if device == "cpu":
        group = f"{{ count: {instance_count} kind: KIND_CPU }}"
    else:
        gpu = device.split(":", 1)[1] if ":" in device else "0"
        group = f"{{ count: {instance_count} kind: KIND_GPU gpus: [ {gpu} ] }}"
    preferred = (f"preferred_batch_size: [ {', '.join(map(str, spec.preferred_batch_sizes))} ] "
                 if spec.preferred_batch_sizes else "")
    return (f"{PLATFORM['python' if in_python else framework]}\nmax_batch_size: {spec.max_batch_size}\n"
            f"input [\n{tensors(spec.inputs)}\n]\noutput [\n{tensors(spec.outputs)}\n]\n"
            f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
            f"instance_group [ {group} ]\n"
            + (f'parameters {{ key: "cpu_threads" value {{ string_value: "{cpu_threads}" }} }}\n'
               if cpu_threads and in_python else "")
            + (f'model_warmup [ {{ name: "warmup" batch_size: {warmup_batch} '
               + " ".join(f'inputs {{ key: "{t.name}" value {{ data_type: TYPE_{t.dtype} dims: [ '
                          f'{", ".join(map(str, t.dims))} ] random_data: true }} }}' for t in spec.inputs)
               + " } ]\n" if warmup_batch else ""))


def package(model: str, framework: str, out_dir: str | Path, *, device: str = "cpu",
            inputs: list[str] | None = None, max_batch_size: int | None = None,
            instance_count: int = 1, cpu_threads: int | None = None, onnx_in_python: bool = False,
            trt_profile: tuple[int, int, int] | None = None, warmup_batch: int | None = None) -> PackagedModel:
    """Write ``<out_dir>/<name>/`` (the Triton model directory) and ``<out_dir>/model.tar.gz``.
    ``onnx_in_python``: an ONNX model run by onnxruntime inside the Python backend (for a
    tritonserver without the onnxruntime backend). ``trt_profile``: TensorRT's (min, opt, max)
    batch, apart from the max batch; ``warmup_batch``: a warm-up at load (TensorRT's default:
    the max batch, as the reference did)."""
    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework; use one of {', '.join(FRAMEWORKS)}", field="--framework", value=framework)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError("use cpu, cuda or cuda:N", field="--device", value=device)
    spec, source = resolve(model, inputs, max_batch_size)
    if warmup_batch is not None and not 1 <= warmup_batch <= spec.max_batch_size:
        raise ConfigError(f"must be 1 to the max batch ({spec.max_batch_size})", field="--warmup-batch",
                          value=warmup_batch)
    if framework == "tensorrt":
        from mmesim.triton.tensorrt import batch_profile, require_tensorrt
        batch_profile(spec, trt_profile)
        require_tensorrt()   # fail before spending minutes on conversion
        warmup_batch = warmup_batch or spec.max_batch_size
    out_dir = Path(out_dir)
    directory = out_dir / spec.name
    if directory.exists():
        shutil.rmtree(directory)
    version = directory / "1"
    version.mkdir(parents=True)
    target = version / FILENAME[framework]

    if source.kind == "onnx":
        if framework in ("python", "pytorch"):
            raise ConfigError(f"an ONNX file can be packaged for onnx or tensorrt, not {framework}", field="--framework",
                              value=framework)
        if framework == "onnx":
            shutil.copy2(source.value, target)
        else:
            from mmesim.triton.tensorrt import build_plan
            build_plan(Path(source.value), target, spec, shapes=trt_profile)
    else:
        scripted = _torchscript(spec, source, device)
        if not spec.outputs:
            spec = _with_outputs(spec, scripted, device)
        if framework in ("python", "pytorch"):
            scripted.save(str(target))
        elif framework == "onnx":
            _export_onnx(spec, scripted, target, device)
        else:
            from mmesim.triton.tensorrt import build_plan
            onnx_path = out_dir / f"{spec.name}.onnx"
            _export_onnx(spec, scripted, onnx_path, device)
            build_plan(onnx_path, target, spec, shapes=trt_profile)
            onnx_path.unlink()
    in_python = framework == "python" or (framework == "onnx" and onnx_in_python)
    if in_python:
        template = "python_model.py" if framework == "python" else "onnx_model.py"
        (version / "model.py").write_text(resources.files("mmesim.triton").joinpath(f"templates/{template}").read_text())
    (directory / "config.pbtxt").write_text(config_pbtxt(spec, framework, device, instance_count,
                                                         cpu_threads=cpu_threads, in_python=in_python,
                                                         warmup_batch=warmup_batch))
    artifact = out_dir / "model.tar.gz"
    with tarfile.open(artifact, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=spec.name)
    return PackagedModel(spec, framework, directory, artifact, in_python)


NULL_MODEL = '''"""mmesim's null model: a Python-backend process that imports torch (and on a GPU opens a
CUDA context) but holds no weights. Its footprint is the per-process cost every
Python-backend model pays, which calibration keeps apart from the model's own bytes."""

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    def initialize(self, args):
        if args.get("model_instance_kind") == "GPU":
            torch.zeros(1, device=f"cuda:{args['model_instance_device_id']}")

    def execute(self, requests):   # an echo, through DLPack like every mmesim model
        return [pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("OUTPUT__0", to_dlpack(from_dlpack(
            pb_utils.get_input_tensor_by_name(r, "INPUT__0").to_dlpack()).clone()))]) for r in requests]
'''


def package_null(out_dir: str | Path, device: str = "cpu") -> PackagedModel:
    """The null model (see NULL_MODEL), packaged like any other."""
    spec = ModelSpec("null", (TensorSpec("INPUT__0", "FP32", (1,)),), (TensorSpec("OUTPUT__0", "FP32", (1,)),), 8)
    out_dir = Path(out_dir)
    directory = out_dir / "null"
    (directory / "1").mkdir(parents=True, exist_ok=True)
    (directory / "1" / "model.py").write_text(NULL_MODEL)
    (directory / "config.pbtxt").write_text(config_pbtxt(spec, "python", device))
    artifact = out_dir / "model.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(directory, arcname="null")
    return PackagedModel(spec, "python", directory, artifact, True)


def package_copies(model: str, framework: str, out_dir: str | Path, copies: int, **kwargs) -> list[Path]:
    """``<out_dir>/<model>-v0.tar.gz ... -v<copies-1>.tar.gz``: one packaged model under the
    names the reference gave its copies, ready as an MME's model prefix (a directory or S3)."""
    import tempfile
    if copies < 1:
        raise ConfigError("must be at least 1", field="--copies", value=copies)
    out_dir = check_out_folder(out_dir)             # made there
    with tempfile.TemporaryDirectory(prefix="mmesim-package-") as tmp:
        packaged = package(model, framework, tmp, **kwargs)
        paths = []
        for i in range(copies):
            path = out_dir / f"{packaged.spec.name}-v{i}.tar.gz"
            shutil.copyfile(packaged.artifact, path)
            paths.append(path)
    return paths
