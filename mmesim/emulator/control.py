"""The SageMaker control plane, for notebooks written against SageMaker: boto3's ``sagemaker``
client (``endpoint_url=``) creates a multi-model endpoint here as it would on AWS.

The protocol is botocore's JSON 1.1 (``POST /``, ``X-Amz-Target: SageMaker.<Action>``). Names,
ARNs, statuses and error codes follow the service: a missing resource or a duplicate name is a
ValidationException (HTTP 400) saying ``Could not find endpoint "arn..."``, as SageMaker says
it. CreateEndpoint answers at once with the endpoint ``Creating``; the emulator's
``on_create`` callback brings it up, after which DescribeEndpoint shows ``InService`` (or
``Failed`` with the callback's error as FailureReason). DeleteEndpoint shows ``Deleting``
until ``on_delete`` returns, then the endpoint is gone; as on SageMaker, an endpoint still
``Creating`` cannot be deleted (users of the service wait for InService or Failed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from mmesim.emulator.errors import redact

_log = logging.getLogger(__name__)
JSON = "application/x-amz-json-1.1"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_NAME_RULE = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
_SORT_BY = ("Name", "CreationTime", "Status")


@dataclass(frozen=True)
class EndpointSpec:
    """What CreateEndpoint asked for, resolved through its endpoint config and model."""

    name: str
    config_name: str
    model_name: str
    model_data_url: str          # the artifact prefix: s3://bucket/prefix/, file://DIR or a directory
    instance_type: str
    instance_count: int
    variant_name: str = "AllTraffic"
    image: str = ""
    environment: dict[str, str] = field(default_factory=dict)


OnCreate = Callable[[EndpointSpec], Awaitable[None]]
OnDelete = Callable[[str], Awaitable[None]]


class ApiError(Exception):
    """An error answered the way SageMaker answers it."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _invalid(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _check_name(value, field_name: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _invalid(f"1 validation error detected: Value {value!r} at '{field_name}' failed to satisfy "
                       f"constraint: Member must satisfy regular expression pattern: {_NAME_RULE}")
    return value


class ControlPlane:
    """Models, endpoint configs and endpoints, kept in memory for one emulator process."""

    def __init__(self, on_create: OnCreate, on_delete: OnDelete, *, region: str = "us-east-1",
                 account: str = "000000000000"):
        self.on_create, self.on_delete = on_create, on_delete
        self.region, self.account = region, account
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.endpoints: dict[str, dict] = {}
        self._tasks: dict[str, asyncio.Task] = {}

    # -- the HTTP face --------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        """Serve one JSON 1.1 call; errors are shaped so botocore raises the right ClientError."""
        target = request.headers.get("X-Amz-Target", "")
        service, _, action = target.partition(".")
        try:
            if service != "SageMaker" or not action:
                raise ApiError("UnknownOperationException", f"unknown or missing X-Amz-Target {target!r}")
            method = getattr(self, "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", action).lower(), None)
            if method is None or action not in _ACTIONS:
                raise ApiError("UnknownOperationException", f"the emulator does not serve SageMaker.{action}")
            try:
                params = json.loads(await request.read() or b"{}")
            except ValueError:
                raise ApiError("SerializationException", "the body is not valid JSON") from None
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "the body must be a JSON object")
            result = await method(params)
            status, body = 200, result or {}
        except ApiError as exc:
            status, body = exc.status, {"__type": exc.code, "message": exc.message}
        return web.Response(body=json.dumps(body).encode(), status=status,
                            headers={"Content-Type": JSON, "x-amzn-RequestId": str(uuid.uuid4())})

    def adopt(self, spec: EndpointSpec) -> None:
        """Show an endpoint started without CreateEndpoint (``mmesim emulate``'s own) as InService,
        with its model and config, so notebooks can describe, list and delete it."""
        now = time.time()
        self.models.setdefault(spec.model_name, {
            "ModelName": spec.model_name, "ModelArn": self.arn("model", spec.model_name), "CreationTime": now,
            "PrimaryContainer": {"Image": spec.image, "Mode": "MultiModel", "ModelDataUrl": spec.model_data_url,
                                 "Environment": dict(spec.environment)}})
        self.configs.setdefault(spec.config_name, {
            "EndpointConfigName": spec.config_name, "EndpointConfigArn": self.arn("endpoint-config", spec.config_name),
            "CreationTime": now, "ProductionVariants": [{
                "VariantName": spec.variant_name, "ModelName": spec.model_name, "InstanceType": spec.instance_type,
                "InitialInstanceCount": spec.instance_count, "InitialVariantWeight": 1.0}]})
        self.endpoints[spec.name] = {"EndpointName": spec.name, "EndpointArn": self.arn("endpoint", spec.name),
                                     "EndpointConfigName": spec.config_name, "EndpointStatus": "InService",
                                     "CreationTime": now, "LastModifiedTime": now, "spec": spec}

    def status(self, endpoint_name: str) -> str | None:
        """The endpoint's EndpointStatus, None if there is none by that name."""
        endpoint = self.endpoints.get(endpoint_name)
        return endpoint["EndpointStatus"] if endpoint else None

    async def close(self) -> None:
        """Stop creations and deletions still running (emulator shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- names ----------------------------------------------------------------------------
    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    def _get(self, table: dict, kind: str, label: str, name) -> dict:
        if not isinstance(name, str) or name not in table:
            raise _invalid(f'Could not find {label} "{self.arn(kind, str(name))}".')
        return table[name]

    def _unique(self, table: dict, kind: str, label: str, name: str) -> None:
        if name in table:
            raise _invalid(f'Cannot create already existing {label} "{self.arn(kind, name)}".')

    # -- models -------------------------------------------------------------------------
    async def _create_model(self, p: dict) -> dict:
        name = _check_name(p.get("ModelName"), "modelName")
        self._unique(self.models, "model", "model", name)
        containers = p.get("Containers") or ([p["PrimaryContainer"]] if p.get("PrimaryContainer") else [])
        if len(containers) != 1 or not isinstance(containers[0], dict):
            raise _invalid("the emulator serves one container per model: give PrimaryContainer")
        c = containers[0]
        if c.get("Mode") != "MultiModel":
            raise _invalid(f"the emulator serves multi-model endpoints: set PrimaryContainer.Mode to 'MultiModel' "
                           f"(got {c.get('Mode', 'SingleModel')!r})")
        if not isinstance(c.get("ModelDataUrl"), str) or not c["ModelDataUrl"]:
            raise _invalid("a multi-model container needs ModelDataUrl, the prefix its artifacts are under")
        self.models[name] = {"ModelName": name, "ModelArn": self.arn("model", name), "PrimaryContainer": c,
                             "ExecutionRoleArn": p.get("ExecutionRoleArn", ""), "CreationTime": time.time()}
        return {"ModelArn": self.arn("model", name)}

    async def _describe_model(self, p: dict) -> dict:
        return dict(self._get(self.models, "model", "model", p.get("ModelName")))

    async def _delete_model(self, p: dict) -> None:
        self._get(self.models, "model", "model", p.get("ModelName"))
        del self.models[p["ModelName"]]

    # -- endpoint configs -----------------------------------------------------------------
    async def _create_endpoint_config(self, p: dict) -> dict:
        name = _check_name(p.get("EndpointConfigName"), "endpointConfigName")
        self._unique(self.configs, "endpoint-config", "endpoint configuration", name)
        variants = p.get("ProductionVariants")
        if not isinstance(variants, list) or len(variants) != 1:
            raise _invalid("the emulator serves one production variant per endpoint config")
        v = variants[0]
        self._get(self.models, "model", "model", v.get("ModelName"))
        if not isinstance(v.get("InstanceType"), str) or not v["InstanceType"]:
            raise _invalid("ProductionVariants[0].InstanceType is required (the emulator has no serverless mode)")
        count = v.get("InitialInstanceCount", 1)
        if not isinstance(count, int) or count < 1:
            raise _invalid(f"ProductionVariants[0].InitialInstanceCount must be at least 1 (got {count!r})")
        variant = {"VariantName": v.get("VariantName") or "AllTraffic", "ModelName": v["ModelName"],
                   "InstanceType": v["InstanceType"], "InitialInstanceCount": count,
                   "InitialVariantWeight": float(v.get("InitialVariantWeight", 1.0))}
        self.configs[name] = {"EndpointConfigName": name, "EndpointConfigArn": self.arn("endpoint-config", name),
                              "ProductionVariants": [variant], "CreationTime": time.time()}
        return {"EndpointConfigArn": self.arn("endpoint-config", name)}

    async def _describe_endpoint_config(self, p: dict) -> dict:
        return dict(self._get(self.configs, "endpoint-config", "endpoint configuration", p.get("EndpointConfigName")))

    async def _delete_endpoint_config(self, p: dict) -> None:
        self._get(self.configs, "endpoint-config", "endpoint configuration", p.get("EndpointConfigName"))
        del self.configs[p["EndpointConfigName"]]

    # -- endpoints ------------------------------------------------------------------------
    async def _create_endpoint(self, p: dict) -> dict:
        name = _check_name(p.get("EndpointName"), "endpointName")
        self._unique(self.endpoints, "endpoint", "endpoint", name)
        config = self._get(self.configs, "endpoint-config", "endpoint configuration", p.get("EndpointConfigName"))
        variant = config["ProductionVariants"][0]
        model = self._get(self.models, "model", "model", variant["ModelName"])
        c = model["PrimaryContainer"]
        spec = EndpointSpec(name=name, config_name=config["EndpointConfigName"], model_name=model["ModelName"],
                            model_data_url=c["ModelDataUrl"], instance_type=variant["InstanceType"],
                            instance_count=variant["InitialInstanceCount"], variant_name=variant["VariantName"],
                            image=c.get("Image", ""), environment=dict(c.get("Environment") or {}))
        now = time.time()
        self.endpoints[name] = {"EndpointName": name, "EndpointArn": self.arn("endpoint", name),
                                "EndpointConfigName": spec.config_name, "EndpointStatus": "Creating",
                                "CreationTime": now, "LastModifiedTime": now, "spec": spec}
        self._tasks[name] = asyncio.create_task(self._bring_up(name, spec))
        return {"EndpointArn": self.arn("endpoint", name)}

    async def _bring_up(self, name: str, spec: EndpointSpec) -> None:
        endpoint = self.endpoints[name]
        try:
            await self.on_create(spec)
            endpoint["EndpointStatus"] = "InService"
        except asyncio.CancelledError:
            if endpoint["EndpointStatus"] == "Creating":      # not a delete: the emulator is stopping
                endpoint["EndpointStatus"], endpoint["FailureReason"] = "Failed", "creation was cancelled"
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the bring-up is the endpoint's FailureReason
            endpoint["EndpointStatus"] = "Failed"
            _log.warning("endpoint %s failed to come up: %s", name, exc)     # the full reason, for the operator
            endpoint["FailureReason"] = redact(f"{type(exc).__name__}: {exc}")[:1024]     # no server paths
        finally:
            endpoint["LastModifiedTime"] = time.time()
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    async def _describe_endpoint(self, p: dict) -> dict:
        e = self._get(self.endpoints, "endpoint", "endpoint", p.get("EndpointName"))
        out = {k: v for k, v in e.items() if k != "spec"}
        if e["EndpointStatus"] in ("InService", "Deleting"):
            spec: EndpointSpec = e["spec"]
            out["ProductionVariants"] = [{
                "VariantName": spec.variant_name, "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                "CurrentInstanceCount": spec.instance_count, "DesiredInstanceCount": spec.instance_count,
                "DeployedImages": [{"SpecifiedImage": spec.image, "ResolvedImage": spec.image,
                                    "ResolutionTime": e["CreationTime"]}] if spec.image else []}]
        return out

    async def _delete_endpoint(self, p: dict) -> None:
        e = self._get(self.endpoints, "endpoint", "endpoint", p.get("EndpointName"))
        if e["EndpointStatus"] in ("Creating", "Deleting"):
            raise _invalid(f'Cannot delete endpoint "{e["EndpointArn"]}" while it is in {e["EndpointStatus"]} '
                           'status.')
        name = e["EndpointName"]
        e["EndpointStatus"], e["LastModifiedTime"] = "Deleting", time.time()
        self._tasks[name] = asyncio.create_task(self._tear_down(name))

    async def _tear_down(self, name: str) -> None:
        try:
            await self.on_delete(name)
        except Exception:  # noqa: BLE001 - the endpoint goes regardless, as on SageMaker; say why
            _log.exception("on_delete(%r) failed; the endpoint is removed anyway", name)
        finally:
            self.endpoints.pop(name, None)
            if self._tasks.get(name) is asyncio.current_task():
                del self._tasks[name]

    async def _list_endpoints(self, p: dict) -> dict:
        items = list(self.endpoints.values())
        if p.get("NameContains"):
            items = [e for e in items if p["NameContains"] in e["EndpointName"]]
        if p.get("StatusEquals"):
            items = [e for e in items if e["EndpointStatus"] == p["StatusEquals"]]
        for key, test in (("CreationTimeBefore", lambda e, t: e["CreationTime"] < t),
                          ("CreationTimeAfter", lambda e, t: e["CreationTime"] > t),
                          ("LastModifiedTimeBefore", lambda e, t: e["LastModifiedTime"] < t),
                          ("LastModifiedTimeAfter", lambda e, t: e["LastModifiedTime"] > t)):
            if p.get(key) is not None:
                items = [e for e in items if test(e, float(p[key]))]
        sort_by = p.get("SortBy", "CreationTime")
        if sort_by not in _SORT_BY:
            raise _invalid(f"SortBy must be one of {', '.join(_SORT_BY)} (got {sort_by!r})")
        field_of = {"Name": "EndpointName", "CreationTime": "CreationTime", "Status": "EndpointStatus"}[sort_by]
        items.sort(key=lambda e: e[field_of], reverse=p.get("SortOrder", "Descending") == "Descending")
        try:
            start = int(p.get("NextToken") or 0)
        except ValueError:
            raise _invalid(f"invalid NextToken {p.get('NextToken')!r}") from None
        size = int(p.get("MaxResults") or 10)
        page = items[start:start + size]
        out = {"Endpoints": [{k: e[k] for k in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                                                 "EndpointStatus")} for e in page]}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return out


_ACTIONS = frozenset({"CreateModel", "DescribeModel", "DeleteModel", "CreateEndpointConfig",
                      "DescribeEndpointConfig", "DeleteEndpointConfig", "CreateEndpoint", "DescribeEndpoint",
                      "DeleteEndpoint", "ListEndpoints"})
