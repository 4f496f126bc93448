"""Several worker processes behind one port, with one admin state.

``--workers N`` (N > 1) makes this process a supervisor: it reserves the port, loads the
first model version once (imports included) and forks N workers from that state, so a
worker starts in a fraction of a second and shares the loaded libraries and model pages
with its siblings instead of importing and deserializing them again. Each worker warms the
model itself (nothing has run a prediction, started a thread or an event loop, or
imported gRPC before the fork: OpenMP and gRPC runtimes are not fork-safe once used),
then serves as a full server (uvloop) that binds the port with ``SO_REUSEPORT`` so the
kernel spreads connections over them; every worker sets TCP_NODELAY on its own
connections (uvicorn's shared-socket ``--workers`` loses it). A keep-alive connection
stays with the worker that accepted it, so a load balancer or clients that open several
connections are what spread keep-alive load.

Each worker also listens on a private loopback port. An admin call that reaches any
worker is applied there and then repeated on every other worker over that port with a
shared secret (``X-Ctcd-Internal``); if a peer fails, the change is undone where it was
made, so all workers hold the same versions and weights.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ctcd.serving.settings import ServerSettings

INTERNAL_HEADER = "X-Ctcd-Internal"
# prometheus_client's multiprocess directory; read once, when prometheus_client is
# imported, so the supervisor sets it before anything imports the metrics
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_file(peers_dir: Path, index: int) -> Path:
    return peers_dir / f"worker-{index}.json"


def announce_worker(peers_dir: Path, index: int, control_port: int) -> None:
    """A worker says it is ready and where its private port is (atomic rename)."""
    path = worker_file(peers_dir, index)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "control_port": control_port}))
    tmp.replace(path)


class Peers:
    """The other workers of this server, reached on their private ports."""

    def __init__(self, peers_dir: Path, index: int, workers: int, token: str) -> None:
        self._dir, self._index, self._workers, self._token = peers_dir, index, workers, token

    def urls(self) -> list[str]:
        out = []
        for i in range(self._workers):
            if i == self._index:
                continue
            info = json.loads(worker_file(self._dir, i).read_text())
            out.append(f"http://127.0.0.1:{info['control_port']}")
        return out

    async def call(self, method: str, path: str, body: Any = None,
                   urls: list[str] | None = None) -> list[tuple[str, int, Any]]:
        """The same admin call on every peer (or on ``urls``): (peer, status, JSON body)."""
        import httpx

        results = []
        async with httpx.AsyncClient(timeout=600, headers={INTERNAL_HEADER: self._token}) as c:
            for url in self.urls() if urls is None else urls:
                try:
                    response = await c.request(method, url + path, json=body)
                    results.append((url, response.status_code, response.json()))
                except (httpx.HTTPError, ValueError) as err:
                    results.append((url, 599, {"error": f"worker at {url}: {err}"}))
        return results


def supervise(settings: ServerSettings, announce: str, reserve: Callable[[], Any],
              preload: Callable[[], Any], run_worker: Callable[[ServerSettings, Any], int],
              held: Sequence[socket.socket] = ()) -> int:
    """Reserve the port, ``preload()`` the model, fork the workers (each runs
    ``run_worker(its settings, the preloaded model)``), print ``announce`` once all are
    ready, stop them on SIGTERM. Returns 2 when a worker fails to start. ``held``: other
    sockets of the supervisor, closed in the workers."""
    sock = reserve()  # bound with SO_REUSEPORT, never listening: holds the port number
    port = sock.getsockname()[1]
    peers_dir = Path(tempfile.mkdtemp(prefix="ctcd-workers-"))
    (peers_dir / "metrics").mkdir()  # the workers' Prometheus files, summed at each scrape
    os.environ[MULTIPROC_ENV] = str(peers_dir / "metrics")
    token = secrets.token_urlsafe(32)
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pids: list[int] = []
    try:
        model = preload()  # its errors propagate, after the cleanup below
        for index in range(settings.workers):
            if stopping:
                return 0
            pids.append(_fork(run_worker, model, settings.model_copy(update={
                "port": port, "worker_index": index, "peers_dir": peers_dir,
                "internal_token": SecretStr(token)}), (sock, *held)))
        while not all(worker_file(peers_dir, i).exists() for i in range(settings.workers)):
            if stopping:
                return 0
            if _exited(pids):
                print("ctcd model server: a worker failed to start", file=sys.stderr,
                      flush=True)
                return 2
            time.sleep(0.02)
        sock.close()
        print(announce.format(port=port), flush=True)
        while not stopping and not _exited(pids):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        _stop(pids)
        sock.close()
        shutil.rmtree(peers_dir, ignore_errors=True)


def _fork(run_worker: Callable[[ServerSettings, Any], int], model: Any,
          settings: ServerSettings, held: Sequence[socket.socket]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the worker: never returns into the supervisor's code
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for sock in held:
            sock.close()
        code = run_worker(settings, model)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exited(pids: list[int]) -> bool:
    """Whether a worker has exited (reaped here)."""
    for i, pid in enumerate(pids):
        if pid and os.waitpid(pid, os.WNOHANG)[0] == pid:
            pids[i] = 0
            return True
    return False


def _stop(pids: list[int], timeout: float = 30) -> None:
    """SIGTERM each live worker, wait for them (SIGKILL after ``timeout``), reap them."""
    for pid in pids:
        if pid:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    live = [pid for pid in pids if pid]
    while live:
        live = [pid for pid in live if os.waitpid(pid, os.WNOHANG)[0] != pid]
        if live and time.monotonic() > deadline:
            for pid in live:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        time.sleep(0.05)


def merge_versions(own: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of all workers: counts summed; p50 weighted by requests, p99 the worst."""
    merged = {"model_name": own["model_name"], "versions": []}
    for entry in own["versions"]:
        same = [entry] + [v for o in others for v in o.get("versions", [])
                          if v["version"] == entry["version"]]
        total = sum(v["requests"] for v in same)
        p50s = [(v["latency_ms_p50"], v["requests"]) for v in same if v["latency_ms_p50"]]
        p99s = [v["latency_ms_p99"] for v in same if v["latency_ms_p99"] is not None]
        merged["versions"].append({
            **entry,
            "requests": total,
            "errors": sum(v["errors"] for v in same),
            "latency_ms_p50": (sum(p * n for p, n in p50s) / max(1, sum(n for _, n in p50s))
                               if p50s else None),
            "latency_ms_p99": max(p99s) if p99s else None,
        })
    return merged
