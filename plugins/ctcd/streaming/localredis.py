"""A private ``redis-server`` on loopback (Debian's package), for tests, benchmarks and a
local try-out. Production points scorers at its own Redis with ``--redis-url``; for
at-least-once delivery across a Redis restart, that Redis needs persistence
(``appendonly yes``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from ctcd.stack.processes import free_port, spawn, stop_process_tree


@dataclass
class LocalRedis:
    process: subprocess.Popen[bytes]
    port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        stop_process_tree(self.process.pid)


def start(directory: Path, *, port: int | None = None, timeout: float = 30.0,
          appendonly: bool = False) -> LocalRedis:
    """Start ``redis-server`` with its files in ``directory``; wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `apt-get install -y redis-server` "
                           "(Debian/Ubuntu) or point the scorer at your Redis")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                  "--save", "", "--appendonly", "yes" if appendonly else "no",
                  "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"],
                 log_path=directory / "redis.log")
    server = LocalRedis(proc, port, directory)
    deadline = time.monotonic() + timeout
    client = server.client()
    try:
        while True:
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    log = (directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not start on port {port}:\n{log}"
                                       ) from None
                time.sleep(0.1)
    finally:
        client.close()
