"""Small process helpers shared by the embedded stack and the tests: ports, readiness, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from ctcd import reaper
from ctcd.net import port_is_free

__all__ = ["free_port", "port_is_free", "spawn", "stop_process_tree", "wait_http"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in its own session (so it outlives its parent's group).
    Under a reaper (:mod:`ctcd.reaper`: a benchmark, the test session) it is registered, so
    it is stopped when its owner ends however it ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    reaper.watch(proc.pid)
    return proc


def wait_http(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait until ``url`` answers 2xx; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{_command(process.args)} exited with {process.returncode} "
                f"before {url} answered.{_tail(log_path)}"
            )
        try:
            if httpx.get(url, timeout=2.0).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s.{_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\nLast lines of {log_path}:\n" + "\n".join(text)


def stop_process_tree(pid: int, *, timeout: float = 15.0) -> bool:
    """SIGTERM a process and its whole session, SIGKILL what is left. False if it was gone."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return True


def _command(args: object) -> str:
    if isinstance(args, list | tuple):
        return " ".join(map(str, args))
    return str(args)
