"""The benchmarks clean up after themselves however they end: stopped (SIGTERM, as `timeout`
and `make` send it) or killed (SIGKILL), a benchmark leaves no server running and no
temporary directory behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.ended import wait_cleaned

from ctcd import reaper

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env}
    environ.pop(reaper.ENV, None)  # the benchmark's own reaper, not the test session's
    return subprocess.Popen([sys.executable, *argv], env=environ, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(bench: subprocess.Popen[bytes], marker: str,
              timeout: float = 300) -> list[psutil.Process]:
    """The benchmark's descendants once one of them has ``marker`` in its command line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert bench.poll() is None, f"the benchmark exited early ({bench.returncode})"
        tree = psutil.Process(bench.pid).children(recursive=True)
        for proc in tree:
            try:
                if marker in " ".join(proc.cmdline()):
                    time.sleep(1)  # let it get going (and start its own children)
                    return [p for p in psutil.Process(bench.pid).children(recursive=True)
                            if "reaper.py" not in " ".join(p.cmdline())]
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    pytest.fail(f"no process with {marker!r} under the benchmark within {timeout:.0f} s")


def _work_dir(procs: list[psutil.Process], prefix: str) -> Path:
    for proc in procs:
        found = re.search(rf"(/\S*/{prefix}[^/\s]+)", " ".join(proc.cmdline()))
        if found:
            return Path(found[1])
    pytest.fail(f"no {prefix}* directory in the command lines of {procs}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_bench_serving_stopped_or_killed_leaves_no_server(sig: signal.Signals) -> None:
    """The shadow cell: a model server of ours under wrk."""
    bench = _start(["bench/serving/bench_serving.py", "--only", "shadow"],
                   {"BENCH_SECONDS": "60"})
    procs = _wait_for(bench, "ctcd.serving")
    work = _work_dir(procs, "ctcd-bench-serving-")
    bench.send_signal(sig)
    code = bench.wait(timeout=60)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    wait_cleaned(procs, work)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_bench_batch_stopped_or_killed_leaves_no_child_or_directory(sig: signal.Signals) -> None:
    """While its first scoring child process runs, with the registry and inputs written."""
    bench = _start(["bench/batch/bench_batch.py", "--quick"], {})
    procs = _wait_for(bench, "--child")
    work = _work_dir(procs, "ctcd-bench-batch-")
    assert work.is_dir()
    bench.send_signal(sig)
    code = bench.wait(timeout=60)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    wait_cleaned(procs, work)
