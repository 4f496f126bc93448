"""Processes and directories that must not outlive the process that made them, however it
ends: SIGTERM, an exception, or SIGKILL (when nothing in it can run any more).

The owner (a benchmark, the test session) starts one *reaper* with :func:`start`: a small
process of its own session, so that a signal to the owner's process group does not reach
it, reading a pipe only the owner holds. When the pipe reaches end of file, or the owner is
gone, the reaper stops every process registered with it (SIGTERM to its process group and
its descendants, SIGKILL after a grace period) and removes every registered directory, then
exits. A registered process that already stopped is skipped (it is known by pid *and* start
time, so a reused pid is never signalled).

Registration goes over a Unix socket (in Linux's abstract namespace) named in the
environment (:data:`ENV`), so whatever the owner starts, and what those processes start in
turn, can register too:
:func:`ctcd.stack.processes.spawn` and the local deployer's detached servers call
:func:`watch` when the variable is set. Without it (``make demo``, a deployment) nothing is
registered and nothing changes: a detached server outlives the task that started it, as it
should.

Run as a script (``python -I reaper.py SOCKET OWNER_PID``) it is the reaper process; it
imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import psutil

ENV: Final = "CTCD_REAPER"  # the reaper's Unix socket (a name in Linux's abstract namespace)
GRACE: Final = 10.0  # seconds between SIGTERM and SIGKILL


class Reaper:
    """The owner's side: the pipe (closing it, or the owner's death, makes the reaper clean
    up) and the reaper process."""

    def __init__(self, proc: subprocess.Popen[bytes], address: str) -> None:
        self.proc, self.address = proc, address

    def close(self, timeout: float = GRACE + 10) -> None:
        """Stop what is still registered and wait for the reaper to finish (the normal end:
        what the owner stopped itself is skipped)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        if os.environ.get(ENV) == self.address:
            del os.environ[ENV]


def start(grace: float = GRACE) -> Reaper:
    """Start this process's reaper and name its socket in ``os.environ`` (inherited by every
    process started from here on)."""
    address = f"ctcd-reaper-{os.getpid()}-{secrets.token_hex(8)}"
    proc = subprocess.Popen(
        [sys.executable, "-I", __file__, address, str(os.getpid()), str(grace)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"the reaper did not start (exit {proc.wait()})")
    proc.stdout.close()
    os.environ[ENV] = address
    return Reaper(proc, address)


def watch(pid: int) -> None:
    """Register process ``pid`` (and its process group and descendants) with the reaper of
    the environment; nothing when there is none."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return
    _send(f"proc {pid} {os.getpgid(pid) if _alive(pid) else pid} {created!r}")


def remove_on_exit(path: Path) -> None:
    """Register a directory the reaper removes when its owner ends."""
    _send(f"path {Path(path).resolve()}")


def exit_on_sigterm() -> None:
    """SIGTERM becomes ``SystemExit(143)`` once (``finally`` blocks and context managers
    stop servers and remove directories); a second SIGTERM during that cleanup (``make``
    forwards one besides the one its process group got) is ignored rather than cut it short.
    Python-level ignoring: a process started meanwhile still gets the default action."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, _ignore)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _ignore(signum: int, frame: Any) -> None:
    pass


def _alive(pid: int) -> bool:
    try:
        os.getpgid(pid)
    except ProcessLookupError:
        return False
    return True


def _send(line: str) -> None:
    address = os.environ.get(ENV)
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect("\0" + address)
            sock.sendall(line.encode() + b"\n")
            sock.recv(16)  # "ok": registered before the caller goes on
        except OSError as err:
            print(f"ctcd reaper at {address} unreachable ({err}); not registered: {line}",
                  file=sys.stderr)


# -- the reaper process -----------------------------------------------------------------------
Registered = tuple[int, int, float]  # pid, process group, start time


def _serve(address: str, owner: int, grace: float) -> None:
    procs: list[Registered] = []
    paths: list[str] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + address)  # Linux's abstract namespace: no file to remove
    listener.listen(64)
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.buffer, selectors.EVENT_READ, "owner")
    selector.register(listener, selectors.EVENT_READ, "listener")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop:
        for key, _ in selector.select(timeout=1.0):
            if key.data == "owner":
                if not os.read(sys.stdin.fileno(), 4096):
                    stop = True
            else:
                _accept(listener, procs, paths)
        if not _owner_alive(owner):
            stop = True
    listener.close()
    stopped = _stop(procs, grace)
    removed = [p for p in paths if os.path.exists(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if stopped or removed:
        with contextlib.suppress(OSError):
            print(f"ctcd reaper: process {owner} ended; stopped {len(stopped)} process(es) it "
                  f"left ({', '.join(stopped)}), removed {removed or 'no directory'}",
                  file=sys.stderr, flush=True)


def _accept(listener: socket.socket, procs: list[Registered], paths: list[str]) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(5)
        data = b""
        with contextlib.suppress(OSError):
            while not data.endswith(b"\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        kind, _, rest = data.decode(errors="replace").strip().partition(" ")
        if kind == "proc":
            pid, pgid, created = rest.split()
            procs.append((int(pid), int(pgid), float(created)))
        elif kind == "path":
            paths.append(rest)
        with contextlib.suppress(OSError):
            connection.sendall(b"ok\n")


def _owner_alive(owner: int) -> bool:
    try:
        return psutil.Process(owner).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(procs: list[Registered], grace: float) -> list[str]:
    """SIGTERM every registered process still running, its descendants and the rest of its
    process group; SIGKILL what is left after ``grace`` seconds. The names of those
    signalled."""
    victims: dict[int, psutil.Process] = {}
    groups = set()
    for pid, pgid, created in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01:
                victims[pid] = proc
                victims.update({c.pid: c for c in proc.children(recursive=True)})
        groups.add((pgid, created))
    for proc in _group_members(groups):
        victims.setdefault(proc.pid, proc)
    victims.pop(os.getpid(), None)
    names = []
    for proc in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            names.append(f"{proc.pid} {proc.name()}")
            proc.send_signal(signal.SIGTERM)
    alive = _wait(list(victims.values()), grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _wait(alive, 5)
    return names


def _wait(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout`` seconds. A zombie has ended:
    a process whose parent is gone may never be reaped here (PID 1 may not reap)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(groups: set[tuple[int, float]]) -> Iterator[psutil.Process]:
    """Processes still in a registered process group (a server whose first process died
    may leave its workers in it) started no earlier than the group's leader was."""
    if not groups:
        return
    for proc in psutil.process_iter(["create_time"]):
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            pgid = os.getpgid(proc.pid)
            if any(pgid == g and proc.info["create_time"] >= created - 0.01
                   for g, created in groups):
                yield proc


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else GRACE)
