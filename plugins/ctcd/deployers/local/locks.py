"""File locks that make operations on one server (or scorer) run one at a time across
processes, and say what waited too long instead of raising a bare ``Timeout``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from ctcd.errors import DeploymentError


@contextmanager
def operation_lock(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold the lock at ``path``; ``what`` names the thing it guards (``model server 'x'``)."""
    lock = filelock.FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as err:
        raise DeploymentError(
            f"another operation on {what} held its lock for longer than {timeout:.0f}s; "
            "try again when it has finished"
        ) from err
    try:
        yield
    finally:
        lock.release()
