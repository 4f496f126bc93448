"""Detached model-server processes: start, observe, stop.

A server is started through a tiny launcher that puts it in a new session and exits, so the
server is re-parented away from the caller: it is not in the Airflow task's process group
(which Airflow kills on timeout, heartbeat loss or an external fail) and it leaves no zombie
behind in the task's process. A process is identified by pid *and* start time, so a reused
pid never reads as our server. Under a benchmark's or the test session's reaper
(:mod:`ctcd.reaper`) a server is also registered with it, so it ends with them; a deployment
has none.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from ctcd import reaper
from ctcd.errors import ServerStartFailed

_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab', buffering=0)\n"
    "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,"
    " stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)\n"
    "print(p.pid, flush=True)\n"
)


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    started: float  # psutil create_time, to tell our process from a reused pid


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> ProcessRef:
    """Start ``argv`` detached (own session, re-parented), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(log_path), *argv],
        env=dict(env), capture_output=True, text=True, timeout=60, check=False,
        start_new_session=True,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise ServerStartFailed(
            f"could not launch {argv[0]}: {result.stderr.strip() or result.stdout.strip()}"
        )
    pid = int(result.stdout.strip())
    reaper.watch(pid)  # only under a benchmark's or the test session's reaper
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess as err:
        raise ServerStartFailed(
            f"model server exited immediately; see {log_path}:\n{tail_text(log_path)}"
        ) from err
    return ProcessRef(pid, started)


def alive(ref: ProcessRef | None) -> bool:
    """True if the very process we started still runs (not exited, not a zombie)."""
    proc = _process(ref)
    if proc is None:
        return False
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def terminate(ref: ProcessRef | None, *, timeout: float, force: bool) -> bool:
    """SIGTERM the server's process group, SIGKILL after ``timeout`` if ``force``.

    Returns True when nothing of it is left running.
    """
    proc = _process(ref)
    if proc is None:
        return True
    group = _group(proc)
    _signal(proc, group, signal.SIGTERM)
    _, alive_ = psutil.wait_procs(group, timeout=timeout)
    if alive_ and force:
        _signal(proc, alive_, signal.SIGKILL)
        _gone, alive_ = psutil.wait_procs(alive_, timeout=10)
    return not [p for p in alive_ if _running(p)]


def foreign_listeners(port: int, ref: ProcessRef | None) -> list[int]:
    """Pids outside ``ref``'s process tree that listen on ``port``.

    Model servers bind with ``SO_REUSEPORT`` (for workers), so a second server can bind the
    same port and silently take half its traffic; this finds such a neighbour.
    """
    own = {p.pid for p in _group(proc)} if (proc := _process(ref)) else set()
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # not allowed to see other users' sockets: cannot tell
        return []
    return sorted({
        c.pid for c in connections
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        and c.pid is not None and c.pid not in own
    })


def tail_text(path: Path, lines: int = 20) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(content[-lines:])


def _process(ref: ProcessRef | None) -> psutil.Process | None:
    if ref is None:
        return None
    try:
        proc = psutil.Process(ref.pid)
        if abs(proc.create_time() - ref.started) > 0.5:
            return None
    except psutil.NoSuchProcess:
        return None
    return proc


def _group(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [proc]


def _signal(leader: psutil.Process, procs: list[psutil.Process], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader.pid, sig)  # the server leads its own session and group
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
