"""Reading a model server's log file: the last lines, optionally following new ones."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path


def read_log(
    path: Path,
    *,
    follow: bool = False,
    tail: int | None = None,
    still_running: Callable[[], bool] = lambda: False,
    poll_interval: float = 0.25,
) -> Iterator[str]:
    """Yield lines of ``path`` (the last ``tail`` if given); with ``follow``, keep yielding
    new lines until the server is no longer running and nothing more was written."""
    if not path.exists():
        return
    with path.open(errors="replace") as fh:
        lines = deque(fh, maxlen=tail) if tail is not None else fh.readlines()
        for line in lines:
            yield line.rstrip("\n")
        if not follow:
            return
        pending = ""
        while True:
            chunk = fh.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending.rstrip("\n")
                    pending = ""
                continue
            if not still_running():
                if pending:
                    yield pending
                return
            time.sleep(poll_interval)
