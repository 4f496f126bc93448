"""Correlation ids: one per prediction request, the same on the answer, the request log,
a shadow's record of it and the server log.

A client may send its own (``X-Request-ID`` over HTTP, the ``x-request-id`` metadata key
over gRPC); otherwise the server makes one, unique per process start plus a counter (no
``os.urandom`` call per request), and returns it in the same header or metadata key.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Final

from ctcd.serving.errors import InvalidInput

HEADER: Final = "X-Request-ID"
METADATA: Final = "x-request-id"  # gRPC metadata keys are lower-case
MAX_LENGTH: Final = 128
_PREFIX: Final = uuid.uuid4().hex[:16]
_COUNTER: Final = itertools.count(1)


def new_id() -> str:
    return f"{_PREFIX}-{next(_COUNTER)}"


def accept(given: str | None) -> str:
    """The client's id when it sent a usable one, else a new one; a malformed one is a 400
    (raised as :class:`InvalidInput` naming the header)."""
    if given is None or given == "":
        return new_id()
    if len(given) > MAX_LENGTH or not (given.isascii() and given.isprintable()):
        raise InvalidInput(HEADER, f"must be at most {MAX_LENGTH} printable ASCII characters, "
                           f"got {given[:40]!r}{'...' if len(given) > 40 else ''}")
    return given
