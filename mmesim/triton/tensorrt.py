"""Build a TensorRT engine (``model.plan``) from an ONNX file, on the GPU that will run it.

Engines are tied to the GPU architecture and the TensorRT version: build them where Triton
runs (the calibration image of containers/ has both). FP16, one optimisation profile whose
min/opt/max batch is set apart from Triton's max batch (the reference built 1/64/128 for a
max batch of 12: a large max enlarges the engine's workspace and its memory).
"""

from __future__ import annotations

from pathlib import Path

from mmesim.errors import ConfigError, MissingPiece
from mmesim.triton.modelspec import ModelSpec
from mmesim.units import GiB


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingPiece("the 'tensorrt' Python package is missing: pip install tensorrt (its version must match "
                           "the TensorRT inside the Triton image), or run in the calibration image "
                           "(containers/README.md)") from None
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        raise MissingPiece("building a TensorRT engine needs an NVIDIA GPU (torch.cuda.is_available() is False); "
                           "run on a GPU host, or use --framework python|pytorch|onnx")
    return trt


def batch_profile(spec: ModelSpec, shapes: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The optimisation profile's (min, opt, max) batch: 1 / max batch / max batch by default;
    Triton's max batch must lie within it."""
    low, opt, high = shapes or (1, spec.max_batch_size, spec.max_batch_size)
    if not 1 <= low <= opt <= high:
        raise ConfigError("need 1 <= min <= opt <= max", field="--trt-profile", value=f"{low},{opt},{high}")
    if high < spec.max_batch_size:
        raise ConfigError(f"max must be at least the max batch ({spec.max_batch_size}): Triton sends batches up to "
                          "it", field="--trt-profile", value=f"{low},{opt},{high}")
    return low, opt, high


def build_plan(onnx_path: Path, plan_path: Path, spec: ModelSpec, fp16: bool = True,
               workspace_bytes: int = 4 * GiB, shapes: tuple[int, int, int] | None = None) -> Path:
    low, opt, high = batch_profile(spec, shapes)
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise MissingPiece(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for t in spec.inputs:
        profile.set_shape(t.name, (low, *t.dims), (opt, *t.dims), (high, *t.dims))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise MissingPiece(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path.write_bytes(bytes(engine))
    return plan_path
