"""Whether processes a test started have ended, and their directory is gone."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest


def ended(proc: psutil.Process) -> bool:
    """Ended (PID 1 here does not reap orphans, so a killed orphan may stay a zombie)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_cleaned(procs: list[psutil.Process], work: Path | None, timeout: float = 60) -> None:
    """Fail unless every one of ``procs`` ended and ``work`` was removed within ``timeout``
    seconds (what is left is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(ended(p) for p in procs) and (work is None or not work.exists()):
            return
        time.sleep(0.1)
    left = [p for p in procs if not ended(p)]
    described = [(p.pid, " ".join(p.cmdline())[:80]) for p in left]
    for proc in left:
        proc.kill()
    state = "" if work is None else f"; {work} {'left' if work.exists() else 'removed'}"
    pytest.fail(f"left running: {described}{state}")
