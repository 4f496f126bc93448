"""The reaper: what a benchmark or the test session registered stops with it, however it ends;
without a reaper (a deployment) a detached server outlives whoever started it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.ended import ended, wait_cleaned

from ctcd import reaper

# The owner: starts a reaper (or not), a server that starts a worker of its own (as `mlflow
# server` starts uvicorn), a directory; prints them as one JSON line and waits to be killed.
_OWNER = """
import json, subprocess, sys, tempfile, time
from pathlib import Path
from ctcd import reaper
from tests.ended import ended, wait_cleaned
from ctcd.deployers.local import process
from ctcd.stack.processes import spawn

mode = sys.argv[1]
if mode != "none":
    guard = reaper.start(grace=3)
    if mode == "sigterm":
        reaper.exit_on_sigterm()
work = Path(tempfile.mkdtemp(prefix="ctcd-reaper-test-"))
reaper.remove_on_exit(work)
server = [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
          "'-c', 'import time; time.sleep(600)']); time.sleep(600)"]
if mode == "none":  # the local deployer's detached start, as in a deployment
    pid = process.spawn(server, env={}, log_path=work / "server.log").pid
else:
    pid = spawn(server, log_path=work / "server.log").pid
import psutil
while not psutil.Process(pid).children():
    time.sleep(0.05)
tree = [pid, *[c.pid for c in psutil.Process(pid).children(recursive=True)]]
print(json.dumps({"work": str(work), "tree": tree}), flush=True)
if mode == "close":  # the normal end: the owner closes its reaper when told to
    sys.stdin.readline()
    guard.close()
    sys.exit(0)
time.sleep(600)
"""


def _owner(mode: str) -> tuple[subprocess.Popen[str], Path, list[psutil.Process]]:
    env = {**os.environ, "PYTHONPATH": str(Path(reaper.__file__).parents[1])}
    env.pop(reaper.ENV, None)  # the owner's own reaper, not the test session's
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    doc = json.loads(proc.stdout.readline())
    return proc, Path(doc["work"]), [psutil.Process(p) for p in doc["tree"]]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_owner_takes_its_servers_and_directory(sig: signal.Signals) -> None:
    owner, work, tree = _owner("sigterm")
    assert len(tree) == 2 and not any(ended(p) for p in tree) and work.is_dir()
    owner.send_signal(sig)
    assert owner.wait(timeout=30) == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    wait_cleaned(tree, work, timeout=20)


def test_owner_ending_normally_leaves_nothing_behind() -> None:
    """A server the owner forgot to stop is stopped when it closes its reaper."""
    owner, work, tree = _owner("close")
    owner.communicate("done\n", timeout=30)
    assert owner.returncode == 0
    wait_cleaned(tree, work, timeout=20)


def test_without_a_reaper_a_deployed_server_outlives_its_starter() -> None:
    owner, work, tree = _owner("none")
    try:
        owner.kill()
        owner.wait(timeout=30)
        time.sleep(2)
        assert not any(ended(p) for p in tree), "a detached server died with its starter"
    finally:
        for proc in tree:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_watch_without_a_reaper_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(reaper.ENV, raising=False)
    reaper.watch(os.getpid())  # no socket named: nothing to do, nothing raised
    reaper.remove_on_exit(Path("/nonexistent"))
