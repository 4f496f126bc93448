"""The REST transport: HTTP routes of the MLflow scoring protocol, KServe V2 (JSON and the
binary tensor extension), the admin API, health, metrics and OpenAPI, as a Starlette app.

Each route reads the body, checks the caller, and hands the work to the data plane
(:class:`ctcd.serving.handlers.ModelServer`, :class:`ctcd.serving.admin.Admin`); the
wire formats are in :mod:`ctcd.serving.protocols`.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ctcd.serving import auth
from ctcd.serving.admin import Admin, AdminResult
from ctcd.serving.errors import InvalidInput, PayloadTooLarge, ServingError
from ctcd.serving.handlers import Answer, ModelServer
from ctcd.serving.protocols import ScoringRequest, v2_binary
from ctcd.serving.protocols import mlflow as mlflow_protocol
from ctcd.serving.protocols import v2 as v2_protocol
from ctcd.serving.workers import INTERNAL_HEADER, Peers

JSON = "application/json"


@dataclass(frozen=True)
class AppConfig:
    token: str | None = None
    admin_token: str | None = None
    loopback: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    internal_token: str | None = None  # calls between workers of one server
    peers: Peers | None = None  # the other workers, when --workers > 1


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class Scored:
    """A scoring outcome as ASGI messages: the headers Starlette's ``Response`` would send
    (content-length, content-type, the version that answered, the protocol's own),
    without building its header machinery on every prediction."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, name: bytes, result: Answer) -> None:
        if result.error is not None:
            body, media_type = orjson.dumps({"error": result.error}), JSON
        else:
            body, media_type = result.body, result.media_type
        self.status_code = result.status
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", media_type.encode("latin-1")),
            (b"x-model-name", name),
            (b"x-model-version", result.version.encode("latin-1")),
            *((k.lower().encode("latin-1"), v.encode("latin-1"))
              for k, v in result.headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


# the request headers the prediction routes read (ASGI header names are lower-case)
_BINARY_HEADER = v2_binary.HEADER.lower().encode("latin-1")
_HOT_HEADERS = frozenset((b"authorization", b"content-length", b"content-type",
                          _BINARY_HEADER))


def hot_headers(request: Request) -> dict[bytes, str]:
    """The headers the prediction routes read, from one pass over the ASGI scope's raw
    headers (the first of a repeated name, as Starlette's ``Headers.get`` gives), kept in
    the scope: cheaper per request than building ``Headers`` and scanning it per lookup."""
    scope = request.scope
    found: dict[bytes, str] | None = scope.get("ctcd.headers")
    if found is None:
        found = {}
        for key, value in scope["headers"]:
            if key in _HOT_HEADERS and key not in found:
                found[key] = value.decode("latin-1")
        scope["ctcd.headers"] = found
    return found


async def read_body(request: Request, limit: int) -> bytes:
    declared = hot_headers(request).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(server: ModelServer, config: AppConfig | None = None) -> Starlette:
    config = config or AppConfig()
    name = server.name
    name_header = name.encode("latin-1")
    admin = Admin(server, config.peers)

    async def body(request: Request) -> bytes:
        return await read_body(request, config.max_body_bytes)

    def predict_auth(request: Request) -> None:
        auth.check_token(hot_headers(request).get(b"authorization"), config.token,
                         "predictions")

    # -- MLflow scoring protocol -------------------------------------------------------
    async def ping(request: Request) -> Response:
        return PlainTextResponse("\n", status_code=200 if server.ready() else 503)

    served_version = _mlflow_version()

    async def mlflow_version(request: Request) -> Response:
        return PlainTextResponse(served_version)

    async def invocations(request: Request) -> Scored:
        predict_auth(request)
        data = await body(request)
        content_type = hot_headers(request).get(b"content-type")
        slot = server.registry.pick()
        result = await server.score(
            slot, "mlflow",
            lambda schema: mlflow_protocol.decode(data, content_type, schema),
            lambda _slot, _request, output: mlflow_protocol.encode(output),
        )
        return Scored(name_header, result)

    # -- KServe V2 / Open Inference Protocol ---------------------------------------------
    async def v2_server(request: Request) -> Response:
        return OrjsonResponse(v2_protocol.server_metadata())

    async def v2_live(request: Request) -> Response:
        return OrjsonResponse({"live": True})

    async def v2_ready(request: Request) -> Response:
        ready = server.ready()
        return OrjsonResponse({"ready": ready}, status_code=200 if ready else 503)

    async def v2_model(request: Request) -> Response:
        predict_auth(request)
        return OrjsonResponse(server.model_metadata(request.path_params["name"],
                                                    request.path_params.get("version")))

    async def v2_model_ready(request: Request) -> Response:
        predict_auth(request)
        ready = server.model_ready(request.path_params["name"],
                                   request.path_params.get("version"))
        return OrjsonResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def v2_infer(request: Request) -> Scored:
        predict_auth(request)
        data = await body(request)
        headers = hot_headers(request)
        # no await between picking the version and scoring on it
        slot = server.route(request.path_params["name"], request.path_params.get("version"))
        content_type = headers.get(b"content-type")
        outputs = slot.model.output_names

        def decode(schema: Any) -> ScoringRequest:
            length = v2_binary.header_length(headers.get(_BINARY_HEADER), len(data))
            if length is None:
                return v2_protocol.decode(data, content_type, schema, outputs)
            return v2_binary.decode(data, length, content_type, schema, outputs)

        result = await server.score(
            slot, "v2", decode,
            lambda s, scoring, output: v2_binary.encode(name, s.version, scoring, output),
        )
        return Scored(name_header, result)

    # -- admin -------------------------------------------------------------------------
    def admin_auth(request: Request) -> bool:
        """Check the caller; True when it is another worker of this server (apply here
        only, do not fan out again)."""
        given = request.headers.get(INTERNAL_HEADER)
        if (config.internal_token is not None and given is not None
                and hmac.compare_digest(given.encode(), config.internal_token.encode())):
            return True
        auth.check_admin(request.headers.get("authorization"), config.admin_token,
                         config.loopback)
        return False

    async def json_object(request: Request) -> dict[str, Any]:
        raw = await body(request)
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as err:
            raise InvalidInput("body", f"is not valid JSON ({err})") from None
        if not isinstance(doc, dict):
            raise InvalidInput("body", "must be a JSON object")
        return doc

    def admin_response(result: AdminResult) -> Response:
        status, content = result
        return OrjsonResponse(content, status_code=status)

    async def list_versions(request: Request) -> Response:
        internal = admin_auth(request)
        return admin_response(await admin.list_versions(internal=internal))

    async def add_version(request: Request) -> Response:
        internal = admin_auth(request)
        doc = await json_object(request)
        return admin_response(await admin.add_version(doc, internal=internal))

    async def set_traffic(request: Request) -> Response:
        internal = admin_auth(request)
        doc = await json_object(request)
        return admin_response(await admin.set_traffic(doc, internal=internal))

    async def remove_version(request: Request) -> Response:
        internal = admin_auth(request)
        return admin_response(await admin.remove_version(request.path_params["version"],
                                                         internal=internal))

    # -- operations --------------------------------------------------------------------
    async def metrics(request: Request) -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    async def openapi(request: Request) -> Response:
        from ctcd.serving.openapi import document

        slots = sorted(server.registry.slots, key=lambda s: -s.weight)
        schema = slots[0].model.schema if slots else None
        return OrjsonResponse(document(name, schema, token=config.token is not None,
                                       admin_token=config.admin_token is not None))

    routes = by_path([
        ("/ping", {"GET": ping}),
        ("/health", {"GET": ping}),
        ("/version", {"GET": mlflow_version}),
        ("/invocations", {"POST": invocations}),
        ("/v2", {"GET": v2_server}),
        ("/v2/health/live", {"GET": v2_live}),
        ("/v2/health/ready", {"GET": v2_ready}),
        ("/v2/models/{name}", {"GET": v2_model}),
        ("/v2/models/{name}/ready", {"GET": v2_model_ready}),
        ("/v2/models/{name}/infer", {"POST": v2_infer}),
        ("/v2/models/{name}/versions/{version}", {"GET": v2_model}),
        ("/v2/models/{name}/versions/{version}/ready", {"GET": v2_model_ready}),
        ("/v2/models/{name}/versions/{version}/infer", {"POST": v2_infer}),
        ("/admin/versions", {"GET": list_versions, "POST": add_version}),
        ("/admin/versions/{version}", {"DELETE": remove_version}),
        ("/admin/traffic", {"PUT": set_traffic}),
        ("/metrics", {"GET": metrics}),
        ("/openapi.json", {"GET": openapi}),
    ])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            server.close()

    app = _App(
        routes=routes,
        exception_handlers={ServingError: _serving_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.invocations, app.infer = invocations, v2_infer
    return app


Endpoint = Callable[[Request], Awaitable[Response | Scored]]


def by_path(table: list[tuple[str, dict[str, Endpoint]]]) -> list[Route]:
    """One route per path, whatever its methods: a 405 and ``OPTIONS`` (204) name every
    method the path serves in ``Allow`` (a route per method would name its own only)."""
    routes = []
    for path, endpoints in table:
        methods = {*endpoints, *(("HEAD",) if "GET" in endpoints else ()), "OPTIONS"}
        allow = ", ".join(sorted(methods))

        async def dispatch(request: Request, endpoints: dict[str, Endpoint] = endpoints,
                           allow: str = allow) -> Response | Scored:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            return await endpoints["GET" if request.method == "HEAD" else request.method](
                request)

        routes.append(Route(path, dispatch, methods=sorted(methods)))
    return routes


class _App(Starlette):
    """Starlette, with the two prediction routes dispatched ahead of its middleware stack
    and router: the same endpoints, called directly (their errors rendered as the
    exception handler renders them). Those layers cost more per request than the
    endpoint's own work.

    Middleware added to the app (``add_middleware``, ``middleware=``) would not run on
    that fast path, so an app that has any takes Starlette's whole stack for every
    request instead: CORS, tracing or logging middleware sees the predictions too."""

    invocations: Endpoint | None = None
    infer: Endpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None if self.user_middleware else self._prediction(scope)
        if endpoint is None:
            return await super().__call__(scope, receive, send)
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except ServingError as err:
            response = await _serving_error(request, err)
        await response(scope, receive, send)

    def _prediction(self, scope: Scope) -> Endpoint | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if path == "/invocations":
            return self.invocations
        if not path.startswith("/v2/models/"):
            return None
        parts = path[len("/v2/models/"):].split("/")
        if len(parts) == 2 and parts[0] and parts[1] == "infer":
            scope["path_params"] = {"name": parts[0]}
        elif (len(parts) == 4 and parts[0] and parts[1] == "versions" and parts[2]
              and parts[3] == "infer"):
            scope["path_params"] = {"name": parts[0], "version": parts[2]}
        else:
            return None
        return self.infer


async def _serving_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ServingError):  # registered for ServingError only
        raise exc
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return OrjsonResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    return OrjsonResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                          status_code=exc.status_code, headers=exc.headers)


def _mlflow_version() -> str:
    """What ``GET /version`` answers, as ``mlflow models serve`` does: the MLflow version, or
    ctcd's own when the server runs without MLflow (the small model-server image)."""
    for package in ("mlflow", "mlflow-skinny"):
        try:
            return package_version(package)
        except PackageNotFoundError:
            continue
    return f"ctcd-{package_version('ctcd')}"
