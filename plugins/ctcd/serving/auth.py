"""Bearer tokens for the prediction routes and the admin API."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from ctcd.serving.errors import Forbidden, Unauthorized


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_token(request: Request, expected: str | None, what: str) -> None:
    if expected is None:
        return
    given = _bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(what)


def check_admin(request: Request, admin_token: str | None, loopback_only: bool) -> None:
    """With a token: require it. Without: allow only a server bound to loopback."""
    if admin_token is not None:
        check_token(request, admin_token, "the admin API")
        return
    if not loopback_only:
        raise Forbidden(
            "the admin API is disabled: the server is not bound to a loopback address and "
            "no admin token is set; start it with CTCD_SERVER_ADMIN_TOKEN"
        )
