"""Start a model server: load the first version, bind, print where it listens, serve.

``python -m ctcd.serving --model-uri URI --model-name NAME --model-version V --port N``
(the deployer runs exactly this). The line ``ctcd model server listening on
http://HOST:PORT`` is printed (and flushed) once the model is loaded and the socket
accepts connections.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import uvicorn

from ctcd.serving.errors import ServingError
from ctcd.serving.settings import ServerSettings

if TYPE_CHECKING:
    from ctcd.serving.handlers import ModelServer
    from ctcd.serving.model import LoadedModel
    from ctcd.serving.rest import AppConfig

# Imports are where a cold start goes (scikit-learn's own is most of it), so the modules
# that pull in prometheus_client, the model libraries and gRPC are imported only on the
# path that needs them: a supervisor (--workers N) must set the metrics directory before
# prometheus_client is imported, and gRPC is imported only with --grpc-port.

log = logging.getLogger("ctcd.serving")

READY_LINE = "ctcd model server listening on http://{host}:{port}"


GRPC_READY_LINE = "ctcd model server gRPC listening on {host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server that also runs the gRPC transport (when ``grpc`` is given) on its
    event loop, and calls ``on_ready`` once every socket listens."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None],
                 grpc: Callable[[], tuple[Any, int]] | None = None,
                 announce_host: str | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._make_grpc = grpc
        self._announce_host = announce_host  # None: a worker (the supervisor announces)
        self._grpc: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        grpc_port = None
        if self._make_grpc is not None:
            self._grpc, grpc_port = self._make_grpc()
            await self._grpc.start()
        # Everything loaded so far (the libraries, the model, the app) lives as long as the
        # server: out of the collector's sight, a full collection scans only what requests
        # leave behind (here it scanned the whole heap: a 60 ms pause under load, the p99)
        gc.freeze()
        self._on_ready()
        if grpc_port is not None and self._announce_host is not None:
            print(GRPC_READY_LINE.format(host=self._announce_host, port=grpc_port), flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=5)  # in-flight calls finish first
        await super().shutdown(sockets)


def build(settings: ServerSettings,
          preloaded: LoadedModel | None = None) -> tuple[ModelServer, AppConfig]:
    """Load (unless ``preloaded``) and warm the first version (weight 1) and build the
    server around it."""
    from ctcd.serving import model as model_module
    from ctcd.serving.handlers import BatchConfig, ModelServer
    from ctcd.serving.reqlog import RequestLog
    from ctcd.serving.rest import AppConfig
    from ctcd.serving.shadow import ShadowLimits

    sink = None
    if settings.request_log_sample_rate > 0:
        sink = RequestLog.open(settings.request_log_path, settings.request_log_sample_rate)
    opened: list[RequestLog] = []

    def samples() -> RequestLog:  # a shadow's samples need the log even when nothing is sampled
        if not opened:
            opened.append(RequestLog.open(settings.request_log_path, 0.0))
        return opened[0]

    def load(uri: str, *, original_later: bool = False) -> LoadedModel:
        return model_module.load(uri, compiled=settings.compiled,
                                 compiled_threads=settings.onnx_threads(),
                                 original_later=original_later)
    # the first version: a supervisor's, or one whose graph may answer before its original
    # is loaded (serving/recorded.py); a version added later opens all it uses before ready
    first = {settings.model_uri: preloaded if preloaded is not None else load(
        settings.model_uri, original_later=True)}

    def loader(uri: str) -> LoadedModel:  # the first load takes the one loaded above
        return first.pop(uri, None) or load(uri)

    server = ModelServer(
        settings.model_name,
        loader=loader,
        batching=BatchConfig(settings.batching, settings.max_batch_rows,
                             settings.max_batch_wait_ms, settings.threads),
        sink=sink,
        shadow_limits=ShadowLimits(
            max_queue=settings.shadow_max_queue, samples=settings.shadow_samples,
            windows=settings.shadow_windows, max_rows=settings.max_batch_rows,
            threads=settings.threads),
        samples=samples,
    )
    # ready without waiting for the compiled model (or, when the graph opened first, for the
    # original): run() opens or loads it once the server listens
    model = server.load_blocking(settings.model_uri, compiled_later=True)
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
    display = f"[{settings.host}]" if ":" in settings.host else settings.host
    if settings.workers > 1 and settings.worker_index is None:
        return _failing_clearly(_supervise, settings, display)
    return _failing_clearly(run, settings, display)


def _failing_clearly(start: Callable[..., int], *args: Any) -> int:
    """``start(*args)``, or 2 and the reason on stderr when the model cannot be served."""
    try:
        return start(*args)
    except ServingError as err:
        print(f"ctcd model server: {err.message}", file=sys.stderr, flush=True)
        return 2


def _supervise(settings: ServerSettings, display: str) -> int:
    """``--workers N``: load the model once, fork N workers from it (workers.py)."""
    from ctcd.serving.workers import supervise

    loaded: list[LoadedModel] = []

    def preload() -> LoadedModel:
        from ctcd.serving import model as model_module
        from ctcd.serving import rest  # noqa: F401  (the workers inherit the imports)

        loaded.append(model_module.load(settings.model_uri, compiled=settings.compiled,
                                        compiled_threads=settings.onnx_threads()))
        return loaded[0]

    held = []
    if settings.grpc_port is not None:  # one gRPC port for all workers
        held.append(bind(settings.host, settings.grpc_port, reuse_port=True))
        settings = settings.model_copy(update={"grpc_port": held[0].getsockname()[1]})
    try:
        announce = READY_LINE.format(host=display, port="{port}")
        if held:
            announce += "\n" + GRPC_READY_LINE.format(host=display, port=settings.grpc_port)
        return supervise(settings, announce,
                         lambda: bind(settings.host, settings.port, reuse_port=True),
                         preload, lambda worker, model: _failing_clearly(run, worker, display,
                                                                          model), held)
    finally:
        for sock in held:
            sock.close()
        for model in loaded:
            model.close()  # the workers hold their own copy of it


def run(settings: ServerSettings, display: str, preloaded: LoadedModel | None = None) -> int:
    """Serve in this process: one server, or one worker of a supervisor (preloaded)."""
    from ctcd.serving.rest import create_app
    from ctcd.serving.transport import HttpProtocol

    worker = settings.worker_index is not None
    server, app_config = build(settings, preloaded)
    sockets = [bind(settings.host, settings.port, reuse_port=worker)]
    port = sockets[0].getsockname()[1]
    on_ready: Callable[[], None] = lambda: print(  # noqa: E731
        READY_LINE.format(host=display, port=port), flush=True)
    if worker:
        from ctcd.serving.workers import Peers, announce_worker

        if settings.peers_dir is None or settings.internal_token is None:
            raise ServingError("a worker (--worker-index) is started by its supervisor "
                               "(--workers N), which gives it --peers-dir and its token")
        sockets.append(bind("127.0.0.1", 0, reuse_port=False))  # peers' private port
        token = settings.internal_token.get_secret_value()
        index, peers_dir = int(settings.worker_index or 0), settings.peers_dir
        control = sockets[1].getsockname()[1]
        app_config = replace(app_config, internal_token=token,
                             peers=Peers(peers_dir, index, settings.workers, token))
        on_ready = lambda: announce_worker(peers_dir, index, control)  # noqa: E731
    config = uvicorn.Config(
        create_app(server, app_config),
        loop="uvloop",
        http=HttpProtocol,  # httptools, each response in one write
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=30,
    )
    grpc = None
    if settings.grpc_port is not None:
        grpc = _grpc_factory(server, settings, app_config.token)
    def ready() -> None:
        on_ready()
        server.open_compiled()  # the original model answers until the compiled one is verified

    _Server(config, ready, grpc, None if worker else display).run(sockets=sockets)
    return 0


def _grpc_factory(server: ModelServer, settings: ServerSettings,
                  token: str | None) -> Callable[[], tuple[Any, int]]:
    """What builds the gRPC server inside uvicorn's event loop (grpc.aio binds to the
    loop that creates it)."""
    from ctcd.serving.grpc.server import InferenceService, create_server

    service = InferenceService(server, token)  # compiles the proto now, before binding
    port = settings.grpc_port or 0
    return lambda: create_server(service, settings.host, port, settings.max_body_bytes)



def main(argv: Sequence[str] | None = None) -> int:
    from pydantic_settings import CliApp

    settings = CliApp.run(ServerSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    return serve(settings)
