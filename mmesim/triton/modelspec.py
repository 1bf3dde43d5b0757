"""What a model takes and gives: named tensors with Triton data types and shapes (without
the batch dimension), and the KServe v2 JSON request a client sends for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from mmesim.errors import ConfigError

JSON_TYPE = "application/json"
# Triton's binary tensor extension through the SageMaker protocol (a JSON header, then raw tensors)
BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json;json-header-size={}"
NUMPY_OF = {"FP32": np.float32, "FP16": np.float16, "INT32": np.int32, "INT64": np.int64}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                       # Triton data type without TYPE_: FP32, INT32...
    dims: tuple[int, ...]            # per request, without the batch dimension
    high: int = 1000                 # integer inputs: values drawn from [0, high)

    def __post_init__(self):
        if self.dtype not in NUMPY_OF:
            raise ConfigError(f"unsupported data type; use one of {', '.join(NUMPY_OF)}", field="dtype", value=self.dtype)
        if not self.dims or any(d < 1 for d in self.dims):
            raise ConfigError("dimensions must be positive integers", field=f"{self.name}.dims", value=self.dims)

    @classmethod
    def parse(cls, text: str) -> "TensorSpec":
        """``NAME:DTYPE:D1,D2,...`` as given on the command line, e.g. ``INPUT__0:FP32:3,224,224``."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigError("expected NAME:DTYPE:D1,D2,... (e.g. INPUT__0:FP32:3,224,224)", field="--input", value=text)
        try:
            dims = tuple(int(d) for d in parts[2].split(","))
        except ValueError:
            raise ConfigError("dimensions must be integers separated by commas", field="--input", value=text) from None
        if not parts[0] or min(dims) < 1:
            raise ConfigError("needs a name and dimensions >= 1 (requests are generated at that size)",
                              field="--input", value=text)
        try:
            return cls(parts[0], parts[1].upper(), dims)
        except ConfigError as exc:       # the data type: name the flag and what was typed
            raise ConfigError(exc.message, field="--input", value=text) from None

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        shape = (batch, *self.dims)
        if self.dtype.startswith("INT"):
            return rng.integers(0, self.high, size=shape).astype(NUMPY_OF[self.dtype])
        return rng.random(shape, dtype=np.float32).astype(NUMPY_OF[self.dtype])


@dataclass(frozen=True)
class ModelSpec:
    """A model as Triton sees it: a name, inputs, outputs, and its batching limit."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def sample(self, batch: int, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [t.sample(batch, rng) for t in self.inputs]

    def request_body(self, batch: int = 1, seed: int = 0) -> bytes:
        """The KServe v2 JSON request for ``batch`` samples, as the reference's clients send it."""
        return json.dumps(json_request(self.inputs, self.sample(batch, seed))).encode()

    def binary_body(self, batch: int = 1, seed: int = 0) -> tuple[bytes, str]:
        """The same request in Triton's binary tensor format: (body, content type). Cheap to
        build and parse, so timing executions does not wait on JSON."""
        return binary_request(self.inputs, self.sample(batch, seed))


def json_request(inputs, arrays) -> dict:
    """The KServe v2 JSON document of ``arrays`` (one per input), data as Python lists."""
    return {"inputs": [{"name": t.name, "shape": list(a.shape), "datatype": t.dtype, "data": a.ravel().tolist()}
                       for t, a in zip(inputs, arrays)]}


def binary_request(inputs, arrays) -> tuple[bytes, str]:
    """``arrays`` in Triton's binary tensor extension: a JSON header, then the raw tensors;
    (body, the content type that says where the header ends)."""
    header = json.dumps({"inputs": [
        {"name": t.name, "shape": list(a.shape), "datatype": t.dtype, "parameters": {"binary_data_size": a.nbytes}}
        for t, a in zip(inputs, arrays)]}).encode()
    return header + b"".join(a.tobytes() for a in arrays), BINARY_TYPE.format(len(header))
