"""The ASGI app: HTTP routes of both protocols, the admin API, health, metrics, OpenAPI.

Routes are thin: they read the body, pick the version, and hand the work to
:class:`ctcd.serving.handlers.ModelServer`.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ctcd.serving import auth
from ctcd.serving.errors import InvalidInput, PayloadTooLarge, ServingError
from ctcd.serving.handlers import Answer, ModelServer
from ctcd.serving.protocols import mlflow as mlflow_protocol
from ctcd.serving.protocols import v2 as v2_protocol
from ctcd.serving.workers import INTERNAL_HEADER, Peers, merge_versions

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


def create_app(server: ModelServer, config: AppConfig | None = None) -> Starlette:
    config = config or AppConfig()
    name = server.name
    version_headers = ("X-Model-Name", "X-Model-Version")

    def answer(result: Answer) -> Response:
        return Response(result.body, status_code=result.status, media_type=JSON,
                        headers=dict(zip(version_headers, (name, result.version), strict=False)))

    async def body(request: Request) -> bytes:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
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

    def predict_auth(request: Request) -> None:
        auth.check_token(request, config.token, "predictions")

    # -- MLflow scoring protocol -------------------------------------------------------
    async def ping(request: Request) -> Response:
        ready = server.registry.ready()
        return PlainTextResponse("\n", status_code=200 if ready else 503)

    async def mlflow_version(request: Request) -> Response:
        return PlainTextResponse(package_version("mlflow"))

    async def invocations(request: Request) -> Response:
        predict_auth(request)
        data = await body(request)
        content_type = request.headers.get("content-type")
        slot = server.registry.pick()
        result = await server.score(
            slot, "mlflow",
            lambda schema: mlflow_protocol.decode(data, content_type, schema),
            lambda _slot, _request, output: mlflow_protocol.encode(output),
        )
        return answer(result)

    # -- KServe V2 / Open Inference Protocol ---------------------------------------------
    async def v2_server(request: Request) -> Response:
        return OrjsonResponse(v2_protocol.server_metadata())

    async def v2_live(request: Request) -> Response:
        return OrjsonResponse({"live": True})

    async def v2_ready(request: Request) -> Response:
        ready = server.registry.ready()
        return OrjsonResponse({"ready": ready}, status_code=200 if ready else 503)

    def v2_slot(request: Request, routed: bool) -> Any:
        model = request.path_params["name"]
        if model != name:
            raise v2_protocol.model_not_found(model)
        version = request.path_params.get("version")
        if version is not None:
            return server.registry.get(version)
        return server.registry.pick() if routed else None

    async def v2_model(request: Request) -> Response:
        predict_auth(request)
        slot = v2_slot(request, routed=False)
        slots = [slot] if slot is not None else server.registry.slots
        return OrjsonResponse(v2_protocol.model_metadata(name, slots))

    async def v2_model_ready(request: Request) -> Response:
        predict_auth(request)
        slot = v2_slot(request, routed=False)
        ready = slot.state == "ready" if slot is not None else server.registry.ready()
        return OrjsonResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def v2_infer(request: Request) -> Response:
        predict_auth(request)
        data = await body(request)
        slot = v2_slot(request, routed=True)  # no await between picking and scoring
        result = await server.score(
            slot, "v2",
            lambda schema: v2_protocol.decode(data, request.headers.get("content-type"), schema),
            lambda s, scoring, output: v2_protocol.encode(name, s.version, scoring, output),
        )
        return answer(result)

    # -- admin -------------------------------------------------------------------------
    def admin_auth(request: Request) -> bool:
        """Check the caller; True when it is another worker of this server (apply here
        only, do not fan out again)."""
        given = request.headers.get(INTERNAL_HEADER)
        if (config.internal_token is not None and given is not None
                and hmac.compare_digest(given.encode(), config.internal_token.encode())):
            return True
        auth.check_admin(request, config.admin_token, config.loopback)
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

    def peer_failure(failed: list[tuple[str, int, Any]]) -> Response:
        url, status, answer = failed[0]
        reason = answer.get("error") if isinstance(answer, dict) else answer
        return OrjsonResponse({"error": f"worker {url} refused the change ({status}: "
                               f"{reason}); the change was undone"},
                              status_code=status if 400 <= status < 599 else 502)

    async def list_versions(request: Request) -> Response:
        internal = admin_auth(request)
        described = server.registry.describe()
        if config.peers is not None and not internal:
            others = [b for _, status, b in await config.peers.call("GET", "/admin/versions")
                      if status == 200]
            described = merge_versions(described, others)
        return OrjsonResponse(described)

    async def add_version(request: Request) -> Response:
        internal = admin_auth(request)
        doc = await json_object(request)
        unknown = sorted(set(doc) - {"model_uri", "version"})
        if unknown:
            raise InvalidInput(unknown[0], "is not a field; send {model_uri, version}")
        uri, version = doc.get("model_uri"), _text(doc, "version")
        status, entry = await server.add_version(uri, version)
        if config.peers is not None and not internal:
            results = await config.peers.call("POST", "/admin/versions",
                                              {"model_uri": uri, "version": version})
            failed = [r for r in results if r[1] >= 300]
            if failed:
                added = [url for url, code, _ in results if code == 201]
                await config.peers.call("DELETE", f"/admin/versions/{version}", urls=added)
                if status == 201:
                    await server.remove_version(version)
                return peer_failure(failed)
        return OrjsonResponse(entry, status_code=status)

    async def set_traffic(request: Request) -> Response:
        internal = admin_auth(request)
        doc = await json_object(request)
        if set(doc) != {"weights"}:
            raise InvalidInput("weights", "send exactly {\"weights\": {version: weight}}")
        before = {s.version: s.weight for s in server.registry.slots if s.weight > 0}
        described = await server.set_traffic(doc["weights"])
        if config.peers is not None and not internal:
            results = await config.peers.call("PUT", "/admin/traffic", doc)
            failed = [r for r in results if r[1] >= 300]
            if failed:
                changed = [url for url, code, _ in results if code < 300]
                await config.peers.call("PUT", "/admin/traffic", {"weights": before},
                                        urls=changed)
                await server.set_traffic(before)
                return peer_failure(failed)
        return OrjsonResponse(described)

    async def remove_version(request: Request) -> Response:
        internal = admin_auth(request)
        version = request.path_params["version"]
        described = await server.remove_version(version)
        if config.peers is not None and not internal:
            results = await config.peers.call("DELETE", f"/admin/versions/{version}")
            failed = [r for r in results if r[1] >= 300 and r[1] != 404]
            if failed:
                url, status, answer = failed[0]
                return OrjsonResponse({"error": f"unloaded here, but worker {url} answered "
                                       f"{status}: {answer}"}, status_code=502)
        return OrjsonResponse(described)

    # -- operations --------------------------------------------------------------------
    async def metrics(request: Request) -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    async def openapi(request: Request) -> Response:
        from ctcd.serving.openapi import document

        return OrjsonResponse(document(name))

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", mlflow_version, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/health/live", v2_live, methods=["GET"]),
        Route("/v2/health/ready", v2_ready, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/admin/versions", list_versions, methods=["GET"]),
        Route("/admin/versions", add_version, methods=["POST"]),
        Route("/admin/versions/{version}", remove_version, methods=["DELETE"]),
        Route("/admin/traffic", set_traffic, methods=["PUT"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def serving_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return OrjsonResponse({"error": exc.message}, status_code=exc.status_code,
                              headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return OrjsonResponse({"error": f"{request.method} {request.url.path}: {exc.detail}"},
                              status_code=exc.status_code, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            server.close()

    return Starlette(
        routes=routes,
        exception_handlers={ServingError: serving_error, HTTPException: http_error},
        lifespan=lifespan,
    )


def _text(doc: dict[str, Any], key: str) -> Any:
    value = doc.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # {"version": 2} is a common, harmless slip
    return value
