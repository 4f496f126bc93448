"""The scorer's small HTTP side (``--health-port``), for a process manager that probes:
``GET /healthz`` (alive: the loop turned within ``stall_seconds``), ``GET /readyz`` (the
model is loaded and the stream is read) and ``POST /reload`` (check the model alias now,
as SIGHUP does). Requests carry no input, so the port is safe to expose to the cluster's
kubelet and to the deployer; it serves nothing else. With a token, ``POST /reload`` needs
``Authorization: Bearer <token>`` (the probes stay open: the kubelet sends no headers)."""

from __future__ import annotations

import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Probed(Protocol):
    """What the probes read of a scorer (:class:`ctcd.streaming.scorer.Scorer`)."""

    ready: bool
    last_turn: float  # time.monotonic() of the loop's last turn

    def status(self) -> dict[str, Any]: ...

    def reload(self, *_: Any) -> None: ...


def serve(scorer: Probed, stall_seconds: float, host: str, port: int,
          token: str | None = None) -> ThreadingHTTPServer:
    """Serve the probes of ``scorer`` on ``host:port`` in a daemon thread; ``shutdown()``
    stops it. Alive: the loop turned within ``stall_seconds``. ``token``: what ``POST
    /reload`` must carry as a bearer token."""
    expected = f"Bearer {token}".encode() if token else None

    def live() -> tuple[bool, float]:
        since = time.monotonic() - scorer.last_turn
        return since < stall_seconds, round(since, 3)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            alive, since = live()
            if self.path == "/healthz":
                self._send(200 if alive else 503, {"live": alive, "seconds_since_turn": since})
            elif self.path == "/readyz":
                ok = scorer.ready and alive
                self._send(200 if ok else 503, {"ready": ok, **scorer.status()})
            else:
                self._send(404, {"error": f"no route {self.path}; use /healthz, /readyz or "
                                          "POST /reload"})

        def do_POST(self) -> None:
            if self.path != "/reload":
                self._send(404, {"error": f"no route {self.path}"})
                return
            given = (self.headers.get("Authorization") or "").encode()
            if expected is not None and not hmac.compare_digest(given, expected):
                self._send(401, {"error": "Authorization: POST /reload needs the scorer's "
                                          "bearer token (CTCD_SCORER_RELOAD_TOKEN)"})
                return
            scorer.reload()
            self._send(202, {"reload": "requested"})

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the scorer's own log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
