"""The SageMaker Runtime front: ``POST /endpoints/{name}/invocations`` as boto3's
``sagemaker-runtime`` client calls it, plus ``/ping``, ``/metrics`` (Prometheus text) and
``/metrics.json``. Every request, answered or refused, becomes one RequestRecord."""

from __future__ import annotations

import json
import time

from aiohttp import web

from mmesim.emulator.errors import InternalFailure, InvokeError, ModelError, ServiceUnavailable, ValidationError
from mmesim.results.records import OK, RequestRecord

BODY_LIMIT = 6_291_456           # bytes: InvokeEndpoint's payload limit
TARGET = "X-Amzn-SageMaker-Target-Model"
VARIANT = "AllTraffic"


def artifact_error(exc: Exception) -> InvokeError | None:
    """The answer SageMaker gives when the artifact store fails (interfaces.md item 3)."""
    kind = {c.__name__ for c in type(exc).__mro__}
    if kind & {"InvalidTargetModel", "ArtifactNotFound"}:
        return ValidationError(str(exc))
    if "BadArtifact" in kind:
        return ModelError(f"Failed to extract model data: {exc}", 400, str(exc))
    if kind & {"DiskFull", "StoreUnavailable"}:
        return ServiceUnavailable(str(exc))
    return None


class Front:
    def __init__(self, endpoint_name: str, platform, records, metrics, validate_target, verify=None,
                 control=None):
        self.endpoint_name, self.platform, self.records, self.metrics = endpoint_name, platform, records, metrics
        self.validate_target = validate_target
        self.verify = verify            # verify(request, body) raising on a bad signature, or None
        self.control = control          # the SageMaker control plane (POST /), or None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_LIMIT)
        app.router.add_post("/endpoints/{name}/invocations", self.invocations)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/metrics.json", self.metrics_json)
        if self.control is not None:
            app.router.add_post("/", self.control.handle)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        ready = all(i.ready for i in self.platform.instances)
        return web.Response(status=200 if ready else 503, text="" if ready else "restarting")

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.prometheus(self.platform), content_type="text/plain",
                            headers={"X-Content-Type": "text/plain; version=0.0.4"})

    async def metrics_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.metrics.snapshot(self.platform))

    async def invocations(self, request: web.Request) -> web.StreamResponse:
        started, t0 = time.monotonic(), self.platform.clock()
        target = request.headers.get(TARGET)
        instance, cold, model_s, wait_s = -1, None, None, 0.0
        try:
            name = request.match_info["name"]
            if name != self.endpoint_name:
                raise ValidationError(f"Endpoint {name} of account 000000000000 not found.")
            if request.content_length is not None and request.content_length > BODY_LIMIT:
                return self._too_large(t0, target)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._too_large(t0, target)
            if self.verify is not None:
                self.verify(request, body)
            if not target:
                raise ValidationError("TargetModel header (X-Amzn-SageMaker-Target-Model) is required when invoking "
                                      "a multi-model endpoint")
            target = self.validate_target(target)
            content_type = request.headers.get("Content-Type", "application/octet-stream")
            answer = await self.platform.invoke(target, body, content_type, request.headers.get("Accept"), started)
            instance, cold, model_s, wait_s = answer.instance, answer.cold, answer.model_s, answer.wait_s
            if answer.status >= 300:
                message = answer.body.decode(errors="replace")[:4096]
                raise ModelError(f'Received {"client" if answer.status < 500 else "server"} error ({answer.status}) '
                                 f'from primary with message "{message}".', answer.status, message)
            self._record(t0, target, instance, OK, cold, started, model_s, wait_s)
            return web.Response(body=answer.body, headers={"Content-Type": answer.content_type,
                                                           "x-Amzn-Invoked-Production-Variant": VARIANT})
        except Exception as exc:
            error = exc if isinstance(exc, InvokeError) else artifact_error(exc)
            if error is None:
                error = InternalFailure(f"{type(exc).__name__}: {exc}")
            if getattr(exc, "status", None) == 403 and not isinstance(exc, InvokeError):
                return self._plain(t0, target, 403, getattr(exc, "code", "InvalidSignatureException"), str(exc))
            instance = getattr(exc, "instance", instance)
            if cold is None and isinstance(exc, InvokeError) and instance >= 0:
                cold = True
            self._record(t0, target, instance, error.outcome, cold, started, model_s, wait_s)
            return web.Response(status=error.status, body=error.body(), headers=error.headers())

    def _too_large(self, t0: float, target: str | None) -> web.Response:
        """SageMaker answers an oversize payload with a bare 413 (botocore: ClientError code '413')."""
        self._record(t0, target, -1, "ValidationError", None, None, None, 0.0)
        return web.Response(status=413, body=json.dumps({"message": f"HTTP content length exceeded {BODY_LIMIT} bytes."}).encode(),
                            content_type="application/json")

    def _plain(self, t0, target, status, code, message) -> web.Response:
        self._record(t0, target, -1, "ValidationError", None, None, None, 0.0)
        return web.Response(status=status, body=json.dumps({"__type": code, "message": message}).encode(),
                            headers={"x-amzn-ErrorType": code, "Content-Type": "application/json"})

    def _record(self, t0, target, instance, outcome, cold, started, model_s, wait_s) -> None:
        end = self.platform.clock()
        self.records.add(RequestRecord(t0, end, target or "(none)", instance, outcome, bool(cold)))
        self.metrics.request(instance, outcome, cold, end - t0, model_s, wait_s)
