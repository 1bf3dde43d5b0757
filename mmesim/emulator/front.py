"""The SageMaker Runtime front: ``POST /endpoints/{name}/invocations`` as boto3's
``sagemaker-runtime`` client calls it, plus ``/ping``, ``/metrics`` (Prometheus text) and
``/metrics.json``. Every request, answered or refused at any layer (aiohttp's own parser
included), gets an answer in SageMaker's JSON error shape with ``x-amzn-RequestId`` and becomes
one RequestRecord of its endpoint (or, naming none that is served, one unrouted refusal)."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import uuid
from collections import Counter

from aiohttp import ClientPayloadError, web
from aiohttp.web_protocol import RequestHandler

from mmesim.emulator.errors import (InternalFailure, InvokeError, ModelError, ServiceUnavailable, UnknownOperation,
                                    ValidationError, container_error)
from mmesim.emulator.metrics import prometheus
from mmesim.emulator.store import validate_target_model
from mmesim.results.records import INTERNAL, OK, VALIDATION, RequestRecord

BODY_LIMIT = 6_291_456           # bytes: InvokeEndpoint's payload limit
HEADER_LIMIT = 65_536            # bytes per request line or header: past aiohttp's 8,190, so that a
                                 # 9,000-character TargetModel meets SageMaker's own length check
# set on a request once it is in its endpoint's request log (a typed key where aiohttp has them, 3.14+)
LOGGED = web.RequestKey("mmesim.logged", bool) if hasattr(web, "RequestKey") else "mmesim.logged"
_ENDPOINT_PATH = re.compile(r"^/endpoints/([^/]+)/")
_log = logging.getLogger(__name__)
TARGET = "X-Amzn-SageMaker-Target-Model"
REQUEST_ID = "x-amzn-RequestId"            # botocore's ResponseMetadata["RequestId"]
_GONE = (ConnectionError, ClientPayloadError)    # the client closed before its body arrived


_ID_PREFIX, _ID_COUNT = str(uuid.uuid4())[:24], itertools.count()


def new_request_id() -> str:
    """A unique id in a UUID's shape: a random prefix per process and a counter (a tenth
    of uuid4's cost, on every answer)."""
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFFFFFF:012x}"


def error_response(error: InvokeError) -> web.Response:
    return web.Response(status=error.status, body=error.body(), headers=error.headers())


def too_large() -> web.Response:
    """SageMaker answers an oversize payload with a bare 413 (botocore: ClientError code '413')."""
    return web.Response(status=413, content_type="application/json",
                        body=json.dumps({"message": f"HTTP content length exceeded {BODY_LIMIT} bytes."}).encode())


def _as_refusal(exc: web.HTTPException, request: web.BaseRequest) -> web.Response:
    """aiohttp's own answers (no such route, wrong method, body too large) in SageMaker's shape."""
    if exc.status == 413:
        return too_large()
    if exc.status in (404, 405):
        return error_response(UnknownOperation(f"Unknown operation: {request.method} {request.path[:200]}"))
    if exc.status >= 500:
        return error_response(InternalFailure(exc.reason))
    return error_response(ValidationError(exc.reason))


class _Handler(RequestHandler):
    """aiohttp's connection handler, answering what its parser refuses (a request line or
    header past HEADER_LIMIT, a malformed request) or a handler's crash as SageMaker would,
    instead of a bare text/plain 400 or 500 and a traceback in the log."""

    def handle_error(self, request, status: int = 500, exc=None, message=None) -> web.StreamResponse:
        if request.writer.output_size > 0:      # an answer went out already: the connection is broken
            raise ConnectionError("an answer was sent already")
        if status >= 500:
            _log.error("request failed in the HTTP layer: %s", exc or message)
            error: InvokeError = InternalFailure("The server failed to process the request.")
        else:
            _log.info("refused a request aiohttp could not parse (%s): %s", status, message)
            error = ValidationError(f"The request could not be read: {_parser_message(message, status)}")
        front = getattr(self._manager, "front", None)
        if front is not None:
            front.count_refusal(request, error.outcome)
        response = error_response(error)
        response.headers[REQUEST_ID] = new_request_id()
        response.force_close()
        return response


def _parser_message(message, status: int) -> str:
    """aiohttp's parser message in one line, or its status where it gave none."""
    return str(message or f"HTTP {status}").splitlines()[0][:300]


class FrontRunner(web.AppRunner):
    """An AppRunner whose connections are _Handler's (and so answer parser refusals as SageMaker)."""

    def __init__(self, app: web.Application, front: "Front", **kwargs):
        super().__init__(app, max_line_size=HEADER_LIMIT, max_field_size=HEADER_LIMIT, **kwargs)
        self.front = front

    async def _make_server(self):
        server = await super()._make_server()
        server.front = self.front
        server.__class__ = type("FrontServer", (type(server),), {
            "__call__": lambda srv: _Handler(srv, loop=srv._loop, **srv._kwargs)})
        return server


def _length_rules() -> list[tuple[str, str, str, int | None, int | None]]:
    """(location, wire name, member, min, max) of InvokeEndpoint's header and URI members, from
    botocore's own model of the API: botocore checks no maximum, SageMaker checks them all."""
    import botocore.session
    shape = botocore.session.get_session().get_service_model("sagemaker-runtime").operation_model(
        "InvokeEndpoint").input_shape
    return [(m.serialization["location"], m.serialization["name"], name[0].lower() + name[1:],
             m.metadata.get("min"), m.metadata.get("max"))
            for name, m in shape.members.items() if m.serialization.get("location") in ("header", "uri")]


def check_lengths(request: web.Request, rules) -> None:
    """ValidationError, worded as AWS words it, for each header or URI value outside its
    length limits (a CustomAttributes over 1,024 characters, an InferenceId over 64...)."""
    problems = []
    for location, wire, member, least, most in rules:
        value = request.match_info.get("name") if location == "uri" else request.headers.get(wire)   # EndpointName
        if value is None:
            continue
        shown = value if len(value) <= 80 else value[:77] + "..."
        if most is not None and len(value) > most:
            problems.append(f"Value '{shown}' at '{member}' failed to satisfy constraint: "
                            f"Member must have length less than or equal to {most}")
        elif least is not None and len(value) < least:
            problems.append(f"Value '{shown}' at '{member}' failed to satisfy constraint: "
                            f"Member must have length greater than or equal to {least}")
    if problems:
        n = len(problems)
        raise ValidationError(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(problems))


def check_routing(headers, endpoint: str, variant: str) -> None:
    """What a multi-model endpoint of one production variant refuses, as SageMaker does
    (ValidationError): a TargetVariant it does not have, a TargetContainerHostname (only
    multi-container endpoints with direct invocation take one), an InferenceComponentName
    (only endpoints built of inference components take one)."""
    asked = headers.get("X-Amzn-SageMaker-Target-Variant")
    if asked is not None and asked != variant:
        raise ValidationError(f"Endpoint {endpoint} has no production variant {asked!r}: its variant is {variant!r}")
    if headers.get("X-Amzn-SageMaker-Target-Container-Hostname") is not None:
        raise ValidationError(f"Endpoint {endpoint} is not a multi-container endpoint with direct invocation: "
                              "TargetContainerHostname is not allowed")
    if headers.get("X-Amzn-SageMaker-Inference-Component") is not None:
        raise ValidationError(f"Endpoint {endpoint} has no inference components: InferenceComponentName is not allowed")


def log_group_arn(request: web.Request, endpoint: str) -> str:
    """The endpoint's CloudWatch log group ARN, which SageMaker puts in a ModelError
    (``LogStreamArn``), in the region the request was signed for."""
    m = re.search(r"Credential=[^/]*/\d{8}/([^/]+)/", request.headers.get("Authorization", ""))
    return f"arn:aws:logs:{m[1] if m else 'us-east-1'}:000000000000:log-group:/aws/sagemaker/Endpoints/{endpoint}"


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
    """The HTTP face of the emulator. ``endpoints`` maps a name to the served Endpoint (its
    platform, request log and metrics; the emulator adds and removes them); ``control``
    serves ``POST /`` (the SageMaker control plane); with ``keys`` (access key -> secret)
    every request must be SigV4-signed with one of them, else any credentials are accepted."""

    def __init__(self, endpoints: dict, control=None, keys: dict[str, str] | None = None):
        self.endpoints, self.control, self.keys = endpoints, control, keys
        self.lengths = _length_rules()
        self.unrouted: Counter[str] = Counter()      # refusals naming no served endpoint, by outcome

    def runner(self) -> FrontRunner:
        return FrontRunner(self.app(), self, access_log=None, handle_signals=False)

    def count_refusal(self, request: web.BaseRequest, outcome: str) -> None:
        """A refusal not yet in a request log goes into its endpoint's (the path names it)."""
        if request.get(LOGGED):
            return
        m = _ENDPOINT_PATH.match(request.path) if request.method == "POST" else None
        endpoint = self.endpoints.get(m[1]) if m else None
        if endpoint is None or endpoint.platform is None:
            self.unrouted[outcome] += 1
            return
        log = _Log(endpoint)
        log.record(log.clock(), request.headers.get(TARGET), -1, outcome, None, None, 0.0)
        request[LOGGED] = True

    @web.middleware
    async def request_id(self, request: web.Request, handler) -> web.StreamResponse:
        """Every answer carries ``x-amzn-RequestId``, as AWS's do (clients log
        ``response["ResponseMetadata"]["RequestId"]``), every refusal is in SageMaker's shape and
        counted; a client gone mid-upload ends quietly."""
        try:
            response = await handler(request)
        except _GONE:
            return web.Response(status=400, headers={REQUEST_ID: new_request_id()})
        except web.HTTPException as exc:
            response = _as_refusal(exc, request)
        if response.status >= 400 and request.path != "/ping":       # a 503 ping is no refusal
            self.count_refusal(request, INTERNAL if response.status >= 500 else VALIDATION)
        response.headers.setdefault(REQUEST_ID, new_request_id())
        return response

    def app(self) -> web.Application:
        middlewares = [self.request_id]
        if self.keys:
            from mmesim.emulator.auth import sigv4_middleware
            middlewares.append(sigv4_middleware(self.keys))
        app = web.Application(client_max_size=BODY_LIMIT, middlewares=middlewares)
        app.router.add_post("/endpoints/{name}/invocations", self.invocations)
        app.router.add_post("/endpoints/{name}/async-invocations", self.unsupported)
        app.router.add_post("/endpoints/{name}/invocations-response-stream", self.unsupported)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/metrics.json", self.metrics_json)
        if self.control is not None:
            app.router.add_post("/", self.control.handle)
        return app

    def _served(self) -> list:
        return [e for e in list(self.endpoints.values()) if e.platform is not None]

    async def ping(self, request: web.Request) -> web.Response:
        ready = all(i.ready for e in self._served() for i in e.platform.instances)
        return web.Response(status=200 if ready else 503, text="" if ready else "restarting")

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=prometheus([(e.metrics, e.platform) for e in self._served()]),
                            content_type="text/plain", headers={"X-Content-Type": "text/plain; version=0.0.4"})

    async def metrics_json(self, request: web.Request) -> web.Response:
        return web.json_response({"endpoints": [e.metrics.snapshot(e.platform) for e in self._served()],
                                  "unrouted_refusals": dict(self.unrouted)})

    def _endpoint(self, name: str):
        endpoint = self.endpoints.get(name)
        if endpoint is None or endpoint.platform is None:
            raise ValidationError(f"Endpoint {name} of account 000000000000 not found.")
        return endpoint

    async def unsupported(self, request: web.Request) -> web.Response:
        """InvokeEndpointAsync and InvokeEndpointWithResponseStream: a multi-model real-time
        endpoint takes neither (no AsyncInferenceConfig; streaming has no TargetModel), so
        SageMaker refuses them with ValidationError, and so does the emulator."""
        name = request.match_info["name"]
        try:
            self._endpoint(name)
            operation = ("InvokeEndpointAsync" if request.path.endswith("/async-invocations")
                         else "InvokeEndpointWithResponseStream")
            raise ValidationError(f"Endpoint {name} is a real-time multi-model endpoint: {operation} is not "
                                  "supported there; use InvokeEndpoint with TargetModel")
        except ValidationError as error:
            return error_response(error)

    async def invocations(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        name = request.match_info["name"]
        try:
            check_lengths(request, self.lengths)
            endpoint = self._endpoint(name)
        except ValidationError as error:
            return error_response(error)             # counted by the middleware
        request[LOGGED] = True
        platform, log = endpoint.platform, _Log(endpoint)
        t0 = platform.clock()
        target = request.headers.get(TARGET)
        instance, cold, model_s, wait_s = -1, None, None, 0.0
        try:
            if request.content_length is not None and request.content_length > BODY_LIMIT:
                return log.too_large(t0, target)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return log.too_large(t0, target)
            except _GONE:       # no request arrived, so none is answered or counted
                _log.info("a client closed its connection before its request body arrived")
                return web.Response(status=400)
            check_routing(request.headers, name, endpoint.config.variant_name)
            if not target:
                raise ValidationError("TargetModel header (X-Amzn-SageMaker-Target-Model) is required when invoking "
                                      "a multi-model endpoint")
            target = validate_target_model(target)
            content_type = request.headers.get("Content-Type", "application/octet-stream")
            answer = await platform.invoke(target, body, content_type, request.headers.get("Accept"), started)
            instance, cold, model_s, wait_s = answer.instance, answer.cold, answer.model_s, answer.wait_s
            if answer.status >= 300:
                raise container_error(answer.status, answer.body.decode(errors="replace")[:4096])
            log.record(t0, target, instance, OK, cold, model_s, wait_s)
            return web.Response(body=answer.body, headers={
                "Content-Type": answer.content_type, "x-Amzn-Invoked-Production-Variant": endpoint.config.variant_name})
        except Exception as exc:
            error = exc if isinstance(exc, InvokeError) else artifact_error(exc)
            if error is None:
                _log.exception("InvokeEndpoint %s failed unexpectedly", target)
                error = InternalFailure(f"{type(exc).__name__}: {exc}")
            if isinstance(error, ModelError):
                error.log_stream_arn = log_group_arn(request, name)
            instance = getattr(exc, "instance", instance)
            cold = getattr(exc, "cold", cold)
            log.record(t0, target, instance, error.outcome, cold, model_s, wait_s)
            return error_response(error)


class _Log:
    """One endpoint's request log and metrics, as the front writes them."""

    __slots__ = ("clock", "records", "metrics")

    def __init__(self, endpoint):
        self.clock, self.records, self.metrics = endpoint.platform.clock, endpoint.records, endpoint.metrics

    def record(self, t0, target, instance, outcome, cold, model_s, wait_s) -> None:
        end = self.clock()
        self.records.add(RequestRecord(t0, end, target or "(none)", instance, outcome, bool(cold)))
        self.metrics.request(instance, outcome, cold, end - t0, model_s, wait_s)

    def too_large(self, t0: float, target: str | None) -> web.Response:
        self.record(t0, target, -1, VALIDATION, None, None, 0.0)
        return too_large()
