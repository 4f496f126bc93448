"""The prediction routes read their headers from one pass over the ASGI scope; what they
get must be what Starlette's ``Headers`` would have given."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from ctcd.serving.rest import hot_headers

NAMES = ("authorization", "content-length", "content-type",
         "inference-header-content-length")


@pytest.mark.parametrize("raw", [
    [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"12")],
    [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b"),  # first one wins
     (b"content-type", b"application/octet-stream"),
     (b"inference-header-content-length", b"57"), (b"content-length", b"100")],
    [(b"content-type", "text/csv; charset=\xe9".encode("latin-1"))],     # latin-1 values
    [],
])
def test_hot_headers_match_starlette(raw: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": raw}
    expected = {name: Request(scope).headers.get(name) for name in NAMES}

    found = hot_headers(Request(scope))

    assert {name: found.get(name.encode()) for name in NAMES} == expected
    assert hot_headers(Request(scope)) is found  # read once per request (kept in the scope)
