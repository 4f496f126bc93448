"""Running real scorer processes (``python -m ctcd.streaming``) in tests, and the rows they
score."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import redis

from ctcd.stack.processes import spawn, stop_process_tree
from ctcd.streaming.client import read


@dataclass
class ScorerProcess:
    proc: Any
    log: Path
    consumer: str

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ctcd streaming scorer ready" in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"scorer exited with {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.2)
        raise AssertionError(f"scorer not ready within {timeout:.0f}s:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return int(self.proc.wait(timeout=timeout))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            stop_process_tree(self.proc.pid, timeout=10)


def start_scorer(tmp_path: Path, redis_url: str, stream: str, model_uri: str, consumer: str,
                 **options: Any) -> ScorerProcess:
    argv = [sys.executable, "-m", "ctcd.streaming", "--model-uri", model_uri,
            "--redis-url", redis_url, "--stream", stream, "--group", "scorers",
            "--consumer", consumer]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    log = tmp_path / f"{consumer}.log"
    return ScorerProcess(spawn(argv, log_path=log), log, consumer)


def churn_rows(n: int, day: int = 2) -> list[dict[str, Any]]:
    from ctcd.data.churn import FEATURES, generate_snapshot

    frame = generate_snapshot(date(2026, 1, day), rows=max(n, 1000)).head(n)
    return list(frame[list(FEATURES)].to_dict(orient="records"))


def outputs(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return list(read(client, f"{stream}:predictions"))


def dead_letters(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return list(read(client, f"{stream}:dead"))


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               logs: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs()}")
