"""Errors of the model server. Each carries its HTTP status and builds its own message.

They subclass :class:`ctcd.errors.CtcdError`, the project's one root error, so a caller
outside the server can catch every project error at once. The transports turn any of
them into ``{"error": message}`` with ``status_code``; nothing else becomes a 4xx.
"""

from __future__ import annotations

from ctcd.errors import CtcdError


class ServingError(CtcdError):
    """Root of the model server's errors."""

    status_code = 400


class InvalidInput(ServingError):
    """The request body does not fit the protocol or the model signature."""

    status_code = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class PayloadTooLarge(ServingError):
    status_code = 413

    def __init__(self, size: int | None, limit: int) -> None:
        got = f"{size} bytes" if size is not None else "more"
        super().__init__(
            f"body: {got} is over the limit of {limit} bytes; send fewer rows per request "
            "or raise --max-body-bytes"
        )


class UnsupportedMediaType(ServingError):
    status_code = 415

    def __init__(self, content_type: str, supported: tuple[str, ...]) -> None:
        super().__init__(
            f"Content-Type: {content_type!r} is not supported; use one of {list(supported)} "
            "(charset utf-8)"
        )


class ModelRejectedInput(ServingError):
    """The input passed the signature check but the model refused it (e.g. a value it
    cannot handle). The client can fix it, so it is a 4xx."""

    status_code = 422

    def __init__(self, reason: str) -> None:
        super().__init__(f"the model could not score this input: {reason}")


class ModelNotFound(ServingError):
    status_code = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"model {name!r}" + (f" version {version!r}" if version is not None else "")
        super().__init__(f"{what} is not served here; GET /v2/models or /admin/versions lists it")


class ModelNotReady(ServingError):
    status_code = 503

    def __init__(self, name: str, reason: str = "no version has traffic") -> None:
        super().__init__(f"model {name!r} is not ready: {reason}")


class Unauthorized(ServingError):
    status_code = 401

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} requires the header 'Authorization: Bearer <token>' with a valid token"
        )


class Forbidden(ServingError):
    status_code = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class AdminConflict(ServingError):
    status_code = 409

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class ModelLoadError(ServingError):
    """A version could not be loaded or warmed; nothing else changed."""

    status_code = 422

    def __init__(self, model_uri: str, reason: str) -> None:
        super().__init__(f"could not load {model_uri}: {reason}")
        self.model_uri = model_uri
