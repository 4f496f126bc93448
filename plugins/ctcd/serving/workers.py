"""Several worker processes behind one port, with one admin state.

``--workers N`` (N > 1) makes this process a supervisor: it reserves the port and starts
N workers, each a full server (model loaded, uvloop) that binds the port with
``SO_REUSEPORT`` so the kernel spreads connections over them; every worker sets
TCP_NODELAY on its own connections (uvicorn's shared-socket ``--workers`` loses it). A
keep-alive connection stays with the worker that accepted it, so a load balancer or
clients that open several connections are what spread keep-alive load.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ctcd.serving.metrics import MULTIPROC_ENV
from ctcd.serving.settings import ServerSettings

INTERNAL_HEADER = "X-Ctcd-Internal"


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
        results = []
        async with httpx.AsyncClient(timeout=600, headers={INTERNAL_HEADER: self._token}) as c:
            for url in self.urls() if urls is None else urls:
                try:
                    response = await c.request(method, url + path, json=body)
                    results.append((url, response.status_code, response.json()))
                except (httpx.HTTPError, ValueError) as err:
                    results.append((url, 599, {"error": f"worker at {url}: {err}"}))
        return results


def worker_env(settings: ServerSettings, *, port: int, index: int, peers_dir: Path,
               token: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"CTCD_SERVER_{name.upper()}"] = str(value).lower() if isinstance(value, bool) \
            else str(value)
    env.update({"CTCD_SERVER_PORT": str(port), "CTCD_SERVER_WORKER_INDEX": str(index),
                "CTCD_SERVER_PEERS_DIR": str(peers_dir), "CTCD_SERVER_INTERNAL_TOKEN": token,
                MULTIPROC_ENV: str(peers_dir / "metrics")})
    return env


def supervise(settings: ServerSettings, announce: str, reserve: Any) -> int:
    """Start the workers, print ``announce`` once all are ready, stop them on SIGTERM."""
    sock = reserve()  # bound with SO_REUSEPORT, never listening: holds the port number
    port = sock.getsockname()[1]
    peers_dir = Path(tempfile.mkdtemp(prefix="ctcd-workers-"))
    (peers_dir / "metrics").mkdir()  # the workers' Prometheus files, summed at each scrape
    token = secrets.token_urlsafe(32)
    procs = [
        subprocess.Popen([sys.executable, "-m", "ctcd.serving"],
                         env=worker_env(settings, port=port, index=i, peers_dir=peers_dir,
                                        token=token))
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not all(worker_file(peers_dir, i).exists() for i in range(settings.workers)):
            if stopping or any(p.poll() is not None for p in procs):
                print("ctcd model server: a worker failed to start", file=sys.stderr,
                      flush=True)
                return 2
            time.sleep(0.05)
        sock.close()
        print(announce.format(port=port), flush=True)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(peers_dir, ignore_errors=True)


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
