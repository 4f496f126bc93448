"""Model-server options a deployment records: the server's non-secret settings.

The model server reads its settings from ``CTCD_SERVER_*`` variables
(:class:`ctcd.serving.settings.ServerSettings`). A deployment records the ones in force when
it was made (batching, request log, log level...), so a restart from another process, with
another environment, starts the same server. Tokens are never recorded: a deployment only
records *that* the server required a prediction token, and whoever starts it again must
provide ``CTCD_SERVER_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ctcd.errors import InvalidParams, ServerStartFailed

PREFIX = "CTCD_SERVER_"
TOKEN_VARIABLE = "CTCD_SERVER_TOKEN"
# Set by the deployer for each server (identity, address, model), or internal to the server.
MANAGED = frozenset({
    "model_uri", "model_name", "model_version", "host", "port", "workers", "tracking_uri",
    "worker_index", "peers_dir", "port_range",
})
_SECRET_WORDS = ("token", "password", "secret", "credential")


def is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def check_options(options: Mapping[str, str]) -> None:
    """Refuse options a record must not hold (secrets) or that the deployer sets itself."""
    for name in options:
        if is_secret(name):
            raise InvalidParams(
                f"server option {name!r} looks like a secret, and a deployment record never "
                f"holds one; give it to the server through its environment ({PREFIX}"
                f"{name.upper()}) instead"
            )
        if name in MANAGED:
            raise InvalidParams(
                f"server option {name!r} is set by the deployer; use DeploymentConfig's own "
                "fields (model_uri, model_version, workers, tracking_uri) instead"
            )


def options_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The model server's non-secret settings in ``environ`` (``CTCD_SERVER_MAX_BATCH_ROWS``
    -> ``{"max_batch_rows": ...}``), only names the server knows."""
    from ctcd.serving.settings import ServerSettings

    known = set(ServerSettings.model_fields) - MANAGED
    options = {}
    for key, value in environ.items():
        name = key[len(PREFIX):].lower() if key.startswith(PREFIX) else ""
        if name in known and not is_secret(name):
            options[name] = value
    return options


def server_env(
    environ: Mapping[str, str], options: Mapping[str, str], *, requires_token: bool
) -> dict[str, str]:
    """``environ`` with the server's ``CTCD_SERVER_*`` settings replaced by the recorded
    ``options``. The prediction token of ``environ`` is kept (a server is never started
    less protected than its starter asks); one the deployment required must be there."""
    if requires_token and not environ.get(TOKEN_VARIABLE):
        raise ServerStartFailed(
            "this model server was deployed to answer only requests with a bearer token, and "
            f"the token is never stored: set {TOKEN_VARIABLE} in the environment that starts "
            "it (e.g. of `ctcd models start`)"
        )
    env = {k: v for k, v in environ.items() if not k.startswith(PREFIX)}
    env.update({f"{PREFIX}{name.upper()}": value for name, value in options.items()})
    if environ.get(TOKEN_VARIABLE):
        env[TOKEN_VARIABLE] = environ[TOKEN_VARIABLE]
    return env
