"""The admin API's HTTP routes: versions, the traffic split, the shadow.

Each route checks the caller (the admin token, or the secret another worker of this
server sends) and hands the parsed body to :class:`ctcd.serving.admin.Admin`, which
applies the change here and on the other workers.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ctcd.serving import auth
from ctcd.serving.admin import Admin, AdminResult
from ctcd.serving.errors import InvalidInput
from ctcd.serving.http import AppConfig, Endpoint, OrjsonResponse, read_body
from ctcd.serving.workers import INTERNAL_HEADER

MAX_SAMPLES = 1000


def admin_routes(admin: Admin, config: AppConfig) -> list[tuple[str, dict[str, Endpoint]]]:
    def caller(request: Request) -> bool:
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
        raw = await read_body(request, config.max_body_bytes)
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as err:
            raise InvalidInput("body", f"is not valid JSON ({err})") from None
        if not isinstance(doc, dict):
            raise InvalidInput("body", "must be a JSON object")
        return doc

    def answer(result: AdminResult) -> Response:
        status, content = result
        return OrjsonResponse(content, status_code=status)

    async def list_versions(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.list_versions(internal=internal))

    async def add_version(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.add_version(await json_object(request), internal=internal))

    async def set_traffic(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.set_traffic(await json_object(request), internal=internal))

    async def remove_version(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.remove_version(request.path_params["version"],
                                                 internal=internal))

    async def shadow(request: Request) -> Response:
        internal = caller(request)
        given = request.query_params.get("samples", "20")
        if not given.isdigit() or int(given) > MAX_SAMPLES:
            raise InvalidInput("samples", f"must be a whole number from 0 to {MAX_SAMPLES}, "
                               f"got {given!r}")
        return answer(await admin.shadow_state(int(given), internal=internal))

    async def start_shadow(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.start_shadow(await json_object(request), internal=internal))

    async def stop_shadow(request: Request) -> Response:
        internal = caller(request)
        return answer(await admin.stop_shadow(internal=internal))

    return [
        ("/admin/versions", {"GET": list_versions, "POST": add_version}),
        ("/admin/versions/{version}", {"DELETE": remove_version}),
        ("/admin/traffic", {"PUT": set_traffic}),
        ("/admin/shadow", {"GET": shadow, "PUT": start_shadow, "DELETE": stop_shadow}),
    ]
