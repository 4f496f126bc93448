"""Bearer tokens for the prediction routes and the admin API, whatever the transport:
each transport hands over the ``authorization`` value it received (an HTTP header, a gRPC
metadata entry)."""

from __future__ import annotations

import hmac

from ctcd.serving.errors import Forbidden, Unauthorized


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_token(authorization: str | None, expected: str | None, what: str) -> None:
    if expected is None:
        return
    given = bearer(authorization)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(what)


def check_admin(authorization: str | None, admin_token: str | None,
                loopback_only: bool) -> None:
    """With a token: require it. Without: allow only a server bound to loopback."""
    if admin_token is not None:
        check_token(authorization, admin_token, "the admin API")
        return
    if not loopback_only:
        raise Forbidden(
            "the admin API is disabled: the server is not bound to a loopback address and "
            "no admin token is set; start it with CTCD_SERVER_ADMIN_TOKEN"
        )
