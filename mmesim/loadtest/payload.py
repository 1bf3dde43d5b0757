"""Request bodies for a profile's model: KServe v2 JSON (what the reference's Locust users sent)
or Triton's binary tensor extension (a JSON header, then the raw tensors).

A Payload keeps the tensors ready and builds the body on every request, because the
reference's timer started before ``json.dumps``: serialising is part of what it measured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmesim.errors import ConfigError
from mmesim.profile import ModelProfile
from mmesim.triton.modelspec import ModelSpec, TensorSpec, binary_request, json_request
from mmesim.triton.zoo import BUILTINS

Format = Literal["json", "binary"]
JSON_TYPE = "application/json"


def model_inputs(profile: ModelProfile, inputs: list[str] | None = None) -> tuple[TensorSpec, ...]:
    """The tensors a request for ``profile`` carries: ``inputs`` given as NAME:DTYPE:D1,D2, or
    those of the built-in model the profile names."""
    if inputs:
        return tuple(TensorSpec.parse(t) for t in inputs)
    if profile.model in BUILTINS:
        return BUILTINS[profile.model][0].inputs
    raise ConfigError(f"the model {profile.model!r} is not built in, so its inputs are unknown: give them as "
                      "NAME:DTYPE:D1,D2,... (--input)", field="profile", value=profile.name)


@dataclass
class Payload:
    """One request's tensors (batch 1) and how to put them on the wire."""

    inputs: tuple[TensorSpec, ...]
    format: Format = "json"
    seed: int = 0

    def __post_init__(self):
        if self.format not in ("json", "binary"):
            raise ConfigError("payload format must be json or binary", field="payload", value=self.format)
        self._arrays = [np.ascontiguousarray(a) for a in ModelSpec("payload", self.inputs, ()).sample(1, self.seed)]
        # the reference held Python lists and called json.dumps per request
        self._doc = json_request(self.inputs, self._arrays)

    def body(self) -> tuple[bytes, str]:
        """(body, content type), built now: call it inside the timed region."""
        if self.format == "json":
            return json.dumps(self._doc).encode(), JSON_TYPE
        return binary_request(self.inputs, self._arrays)

    @property
    def nbytes(self) -> int:
        return len(self.body()[0])
