"""The REST transport: HTTP routes of the MLflow scoring protocol, KServe V2 (JSON and the
binary tensor extension), the admin API, health, metrics and OpenAPI, as a Starlette app.

Each route reads the body, checks the caller, and hands the work to the data plane
(:class:`ctcd.serving.handlers.ModelServer`, :class:`ctcd.serving.admin.Admin`); the
wire formats are in :mod:`ctcd.serving.protocols`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ctcd.serving import auth, correlation
from ctcd.serving.admin import Admin
from ctcd.serving.errors import InvalidInput, ServingError
from ctcd.serving.handlers import Answer, ModelServer, internal_error
from ctcd.serving.http import (
    BINARY_HEADER,
    ID_KEY,
    AppConfig,
    Endpoint,
    OrjsonResponse,
    by_path,
    hot_headers,
    read_body,
    request_id,
)
from ctcd.serving.protocols import ScoringRequest, v2_binary
from ctcd.serving.protocols import mlflow as mlflow_protocol
from ctcd.serving.protocols import v2 as v2_protocol
from ctcd.serving.rest_admin import admin_routes

__all__ = ["AppConfig", "create_app", "hot_headers"]

JSON = "application/json"
log = logging.getLogger("ctcd.serving")


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
            (b"x-request-id", result.request_id.encode("latin-1")),
            (b"x-model-runtime", result.runtime.encode("latin-1")),
            *((k.lower().encode("latin-1"), v.encode("latin-1"))
              for k, v in result.headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def create_app(server: ModelServer, config: AppConfig | None = None) -> Starlette:
    config = config or AppConfig()
    name = server.name
    name_header = name.encode("latin-1")

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
        rid = request_id(request)
        predict_auth(request)
        data = await body(request)
        content_type = hot_headers(request).get(b"content-type")
        slot = server.registry.pick()
        result = await server.score(
            slot, "mlflow",
            lambda schema: mlflow_protocol.decode(data, content_type, schema),
            lambda _slot, _request, output: mlflow_protocol.encode(output), rid,
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
        rid = request_id(request)
        predict_auth(request)
        data = await body(request)
        headers = hot_headers(request)
        # no await between picking the version and scoring on it
        slot = server.route(request.path_params["name"], request.path_params.get("version"))
        content_type = headers.get(b"content-type")
        outputs = slot.model.output_names

        def decode(schema: Any) -> ScoringRequest:
            length = v2_binary.header_length(headers.get(BINARY_HEADER), len(data))
            if length is None:
                scoring = v2_protocol.decode(data, content_type, schema, outputs)
            else:
                scoring = v2_binary.decode(data, length, content_type, schema, outputs)
            scoring.meta["id"] = scoring.meta.get("id") or rid
            return scoring

        result = await server.score(
            slot, "v2", decode,
            lambda s, scoring, output: v2_binary.encode(name, s.version, scoring, output), rid,
        )
        return Scored(name_header, result)

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
        *admin_routes(Admin(server, config.peers), config),
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
        exception_handlers={ServingError: _serving_error, HTTPException: _http_error,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    app.invocations, app.infer = invocations, v2_infer
    return app


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
        except Exception as err:  # the last resort, as Starlette's would be
            response = await _internal_error(request, err)
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
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    rid = request.scope.get(ID_KEY)
    if rid is not None:
        headers[correlation.HEADER] = rid
    return OrjsonResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected error: a generic answer naming the request's correlation id, the
    detail in the server's log under it (never the exception's text to the client)."""
    rid = request.scope.get(ID_KEY)
    if rid is None:
        try:
            rid = request_id(request)
        except InvalidInput:
            rid = request.scope[ID_KEY]
    log.error("request %s: %s %s failed", rid, request.method, request.url.path,
              exc_info=exc)
    return OrjsonResponse({"error": internal_error(rid)}, status_code=500,
                          headers={correlation.HEADER: rid})


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
