"""Start a model server: load the first version, bind, print where it listens, serve.

``python -m ctcd.serving --model-uri URI --model-name NAME --model-version V --port N``
(the deployer runs exactly this). The line ``ctcd model server listening on
http://HOST:PORT`` is printed (and flushed) once the model is loaded and the socket
accepts connections.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn

from ctcd.serving.app import AppConfig, create_app
from ctcd.serving.errors import ServingError
from ctcd.serving.handlers import BatchConfig, ModelServer
from ctcd.serving.settings import ServerSettings

log = logging.getLogger("ctcd.serving")

READY_LINE = "ctcd model server listening on http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server that announces itself once its sockets listen."""

    def __init__(self, config: uvicorn.Config, announce: str) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(self._announce, flush=True)


def build(settings: ServerSettings) -> tuple[ModelServer, AppConfig]:
    """Load and warm the first version (weight 1) and build the server around it."""
    from ctcd.serving import model as model_module
    from ctcd.serving.reqlog import RequestLog

    sink = None
    if settings.request_log_sample_rate > 0:
        sink = RequestLog.open(settings.request_log_path, settings.request_log_sample_rate)
    server = ModelServer(
        settings.model_name,
        loader=model_module.load,
        batching=BatchConfig(settings.batching, settings.max_batch_rows,
                             settings.max_batch_wait_ms),
        sink=sink,
    )
    model = server.load_blocking(settings.model_uri)
    server.install(settings.model_version, model, weight=1.0)
    config = AppConfig(
        token=settings.token.get_secret_value() if settings.token else None,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        loopback=settings.is_loopback(),
        max_body_bytes=settings.max_body_bytes,
    )
    return server, config


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(settings: ServerSettings) -> int:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    try:
        server, app_config = build(settings)
    except ServingError as err:
        print(f"ctcd model server: {err.message}", file=sys.stderr, flush=True)
        return 2
    sock = bind(settings.host, settings.port, reuse_port=False)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(server, app_config),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=30,
    )
    display = f"[{host}]" if ":" in host else host
    _Server(config, READY_LINE.format(host=display, port=port)).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic_settings import CliApp

    settings = CliApp.run(ServerSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    return serve(settings)
