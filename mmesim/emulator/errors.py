"""The errors InvokeEndpoint answers with, shaped as SageMaker Runtime sends them (rest-json:
``x-amzn-ErrorType`` and ``__type`` name the error, ``message`` says why), so botocore
raises the client's own exception class for each: ``client.exceptions.ModelError`` etc.
Each also names the outcome the request log records (mmesim.results.records)."""

from __future__ import annotations

import json
import re

from mmesim.errors import MmesimError
from mmesim.results.records import (EXECUTION_OOM, INTERNAL, MODEL_ERROR, MODEL_NOT_READY, OUT_OF_MEMORY, OVERLOADED,
                                    TIMEOUT, VALIDATION, model_error_cause)


# an absolute path of two or more parts, not inside a word, URL or relative name ('a/b/c')
_SERVER_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def redact(text: str) -> str:
    """``text`` with server-side paths (a cache folder, a work folder in Triton's messages)
    replaced: an error tells the client what failed, never where the server keeps its files."""
    return _SERVER_PATH.sub("<local path>", text)


class InvokeError(MmesimError):
    status = 500
    code = "InternalFailure"
    outcome = INTERNAL

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def fields(self) -> dict:
        return {}

    def body(self) -> bytes:
        message = redact(self.message)
        fields = {k: redact(v) if isinstance(v, str) and k != "LogStreamArn" else v for k, v in self.fields().items()}
        return json.dumps({"__type": self.code, "message": message, "Message": message, **fields}).encode()

    def headers(self) -> dict[str, str]:
        return {"x-amzn-ErrorType": self.code, "Content-Type": "application/json"}


class ValidationError(InvokeError):
    """400: the request itself is wrong (endpoint, TargetModel, size)."""
    status, code, outcome = 400, "ValidationError", VALIDATION


class ModelError(InvokeError):
    """424: the container answered with an error; its status and message are passed on."""
    status, code, outcome = 424, "ModelError", MODEL_ERROR
    log_stream_arn: str | None = None        # the endpoint's CloudWatch log group, as SageMaker names it

    def __init__(self, message: str, original_status: int, original_message: str):
        self.original_status, self.original_message = original_status, original_message
        super().__init__(message)

    def fields(self) -> dict:
        arn = {"LogStreamArn": self.log_stream_arn} if self.log_stream_arn else {}
        return {"OriginalStatusCode": self.original_status, "OriginalMessage": self.original_message, **arn}


class ExecutionOutOfMemory(ModelError):
    """424: the container failed the execution for memory (a CUDA out-of-memory error from
    the backend); SageMaker relays it as any container error, the model stays loaded."""
    outcome = EXECUTION_OOM


def container_error(status: int, message: str) -> ModelError:
    """The ModelError SageMaker answers when the container answered ``status`` with
    ``message``, by its cause (mmesim.results.records.model_error_cause)."""
    said = f'Received {"client" if status < 500 else "server"} error ({status}) from primary with message "{message}".'
    cls = ExecutionOutOfMemory if model_error_cause(message) == EXECUTION_OOM else ModelError
    return cls(said, status, message)


class InvocationTimeout(ModelError):
    """424: no answer within the invocation timeout (60 s on SageMaker); the container goes on
    and finishes unseen. SageMaker reports it as a server error with status 0."""
    outcome = TIMEOUT

    def __init__(self, seconds: float):
        why = (f"Your invocation timed out while waiting for a response from container primary ({seconds:g} s). "
               "Review the latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again.")
        super().__init__(f'Received server error (0) from primary with message "{why}".', 0, why)


class UnknownOperation(InvokeError):
    """404: no such route (method and path) on SageMaker Runtime."""
    status, code, outcome = 404, "UnknownOperationException", VALIDATION


class ModelNotReady(InvokeError):
    """429: the model is not loaded within the ready timeout; its load goes on."""
    status, code, outcome = 429, "ModelNotReadyException", MODEL_NOT_READY


class InternalFailure(InvokeError):
    """500: the backend failed while serving the request (e.g. the server process died)."""
    status, code, outcome = 500, "InternalFailure", INTERNAL


class ServiceUnavailable(InvokeError):
    """503: the instance cannot take the request now (backend restarting, shutting down)."""
    status, code, outcome = 503, "ServiceUnavailable", OVERLOADED


class InsufficientMemory(ServiceUnavailable):
    """503: the model does not fit even after unloading every idle model (the container's 507)."""
    outcome = OUT_OF_MEMORY
