"""A test session told to stop (SIGTERM) stops, even after ``dag.test()`` left Airflow's SIGTERM
handler behind, and its fixtures stop their servers; killed, its reaper stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from tests.ended import wait_cleaned

from ctcd import reaper

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


@pytest.fixture
def session(tmp_path: Path, request: pytest.FixtureRequest
            ) -> Iterator[subprocess.Popen[bytes]]:
    """The session, running the tests ``-k`` selects (the parameter, else the DAG's)."""
    proc = _session(tmp_path, getattr(request, "param", "not tracking"))
    try:
        yield proc
    finally:
        if proc.poll() is None:  # a failed test: its reaper stops the rest
            proc.kill()
            proc.wait()


def _session(marks: Path, tests: str) -> subprocess.Popen[bytes]:
    (marks / "tmp").mkdir()  # its session directory: kept, as a stopped session's is
    env = {**os.environ, "CTCD_STOP_MARKS": str(marks), "TMPDIR": str(marks / "tmp")}
    for name in (reaper.ENV, "AIRFLOW_HOME", "CTCD_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # a session of its own
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW__")}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/stopping_session.py", "-k", tests], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)


def _wait_for(path: Path, session: subprocess.Popen[bytes], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if session.poll() is not None:
            assert session.stdout is not None
            pytest.fail(f"the session ended early:\n{session.stdout.read().decode()[-3000:]}")
        assert time.monotonic() < deadline, f"no {path.name} within {timeout:.0f} s"
        time.sleep(0.2)


def test_sigterm_after_dag_test_stops_the_session_and_its_servers(
        tmp_path: Path, session: subprocess.Popen[bytes]) -> None:
    _wait_for(tmp_path / "waiting", session)
    server = psutil.Process(int((tmp_path / "server").read_text()))
    stopped = time.monotonic()
    session.send_signal(signal.SIGTERM)
    out, _ = session.communicate(timeout=60)
    assert time.monotonic() - stopped < 30, out.decode()[-2000:]
    assert session.returncode == pytest.ExitCode.INTERRUPTED, out.decode()[-2000:]
    assert (tmp_path / "teardown").exists(), "the server fixture was not torn down"
    assert not (tmp_path / "second").exists(), "a test ran after SIGTERM"
    wait_cleaned([server], None, timeout=30)


def test_killed_session_leaves_no_server(tmp_path: Path,
                                        session: subprocess.Popen[bytes]) -> None:
    _wait_for(tmp_path / "waiting", session)
    server = psutil.Process(int((tmp_path / "server").read_text()))
    session.kill()
    session.communicate(timeout=30)
    wait_cleaned([server], None, timeout=30)


@pytest.mark.parametrize("session", ["tracking or never"], indirect=True)
def test_sigterm_after_the_tracking_server_died_ends_the_session_without_a_new_one(
        tmp_path: Path, session: subprocess.Popen[bytes]) -> None:
    """A stop that took the session's MLflow server down too (a time limit killing every
    process of the run): the session stops as interrupted, without starting a new tracking
    server to tear it down again."""
    _wait_for(tmp_path / "waiting", session)
    tree = [psutil.Process(int(pid)) for pid in (tmp_path / "tracking").read_text().split()]
    for proc in tree:
        proc.kill()
    wait_cleaned(tree, None, timeout=30)
    session.send_signal(signal.SIGTERM)
    out, _ = session.communicate(timeout=120)
    text = out.decode()
    assert session.returncode == pytest.ExitCode.INTERRUPTED, text[-3000:]
    assert "started again" not in text, text[-3000:]
    assert not (tmp_path / "second").exists(), "a test ran after SIGTERM"
