"""A test session told to stop (SIGTERM) stops, and takes what it started with it.

pytest has no SIGTERM handler of its own: the signal would end the process before any
fixture's teardown, and leave the servers it started running. Worse, ``dag.test()`` runs
each task through Airflow's task runner in this process, which installs a SIGTERM handler
that only calls the running operator's ``on_kill`` and never puts the previous one back: after
the first ``dag.test()`` a SIGTERM was swallowed and the session went on running tests and
starting servers until it was SIGKILLed.

Here SIGTERM makes the session stop: the first one raises ``KeyboardInterrupt`` where the
test is (pytest then tears the session's fixtures down: servers stopped) and tells the
session to run no further test (in case the interrupt was caught, e.g. by Airflow's task
runner, which turns it into a failed task); later ones only repeat the request, so the
teardown is not cut short. A SIGTERM handler installed by anything else in the session's
process (Airflow's task runner) is kept and runs first, then this one.

What even this cannot cover (SIGKILL) the session's reaper does (:mod:`ctcd.reaper`, started
in ``tests/conftest.py``): every server started through ``spawn`` or the local deployer is
registered with it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_session: pytest.Session | None = None
_interrupted = False
_pid = os.getpid()
_original_signal = signal.signal


def _stop(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    if os.getpid() != _pid:  # a process forked from the session: not ours to stop
        return
    if _session is not None:
        _session.shouldstop = "SIGTERM: the test session was told to stop"
    if not _interrupted and threading.current_thread() is threading.main_thread():
        _interrupted = True
        raise KeyboardInterrupt("SIGTERM: the test session was told to stop")


def _chained(theirs: Handler) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            if callable(theirs):
                theirs(signum, frame)
        finally:
            _stop(signum, frame)

    handler.ctcd_session_stop = True  # type: ignore[attr-defined]
    return handler


def _signal(signum: int, handler: Handler) -> Handler:
    """``signal.signal`` for the session: a SIGTERM handler set in the session's process
    runs, then the session stops."""
    if (signum == signal.SIGTERM and os.getpid() == _pid
            and not getattr(handler, "ctcd_session_stop", False)):
        handler = _chained(handler)
    return _original_signal(signum, handler)  # type: ignore[arg-type]


def install() -> None:
    """SIGTERM stops the session, whatever installs a handler later in this process."""
    signal.signal = _signal  # type: ignore[assignment]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def requested() -> bool:
    """The session was told to stop (it is tearing down, running no further test)."""
    return _interrupted


def session_started(session: pytest.Session) -> None:
    global _session
    _session = session
