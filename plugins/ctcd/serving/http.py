"""What the REST transport's routes share: the app's configuration, JSON responses, the
headers a prediction reads (one pass over the ASGI scope), the correlation id, the body
under its size limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ctcd.serving import correlation
from ctcd.serving.errors import InvalidInput, PayloadTooLarge
from ctcd.serving.protocols import v2_binary
from ctcd.serving.workers import Peers


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


# the request headers the prediction routes read (ASGI header names are lower-case)
BINARY_HEADER = v2_binary.HEADER.lower().encode("latin-1")
ID_HEADER = correlation.HEADER.lower().encode("latin-1")
_HOT_HEADERS = frozenset((b"authorization", b"content-length", b"content-type",
                          BINARY_HEADER, ID_HEADER))
ID_KEY = "ctcd.request_id"  # the request's correlation id, in its ASGI scope


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


def request_id(request: Request) -> str:
    """The request's correlation id (the client's ``X-Request-ID``, else a new one), once
    per request. A malformed one is a 400, answered under a new id."""
    scope = request.scope
    found: str | None = scope.get(ID_KEY)
    if found is None:
        try:
            found = correlation.accept(hot_headers(request).get(ID_HEADER))
        except InvalidInput:
            scope[ID_KEY] = correlation.new_id()
            raise
        scope[ID_KEY] = found
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


# an endpoint answers a Response, or any ASGI callable (the prediction routes' own)
Endpoint = Callable[[Request], Awaitable[Any]]


def by_path(table: list[tuple[str, dict[str, Endpoint]]]) -> list[Route]:
    """One route per path, whatever its methods: a 405 and ``OPTIONS`` (204) name every
    method the path serves in ``Allow`` (a route per method would name its own only)."""
    routes = []
    for path, endpoints in table:
        methods = {*endpoints, *(("HEAD",) if "GET" in endpoints else ()), "OPTIONS"}
        allow = ", ".join(sorted(methods))

        async def dispatch(request: Request, endpoints: dict[str, Endpoint] = endpoints,
                           allow: str = allow) -> Any:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            return await endpoints["GET" if request.method == "HEAD" else request.method](
                request)

        routes.append(Route(path, dispatch, methods=sorted(methods)))
    return routes
