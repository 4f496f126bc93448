"""Running real scorer processes (``python -m ctcd.streaming``) in tests, and the rows they
score."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import redis

from ctcd.deployers.scorers import SupportsScorers
from ctcd.stack.processes import spawn, stop_process_tree
from ctcd.streaming.client import read, send


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


@dataclass
class Sender:
    """Sends ``rows`` (cycling through them) to a stream from a thread at a steady pace,
    ``chunk`` rows every ``pause`` seconds, until :meth:`stop`: requests keep arriving
    while a test changes something under the scorers. ``sent`` holds (entry id, row)."""

    client: redis.Redis
    stream: str
    rows: list[dict[str, Any]]
    chunk: int = 10
    pause: float = 0.05
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                batch = [self.rows[(i + k) % len(self.rows)] for k in range(self.chunk)]
                i += self.chunk
                ids = send(self.client, self.stream, batch)
                self.sent.extend(zip(ids, batch, strict=True))
                time.sleep(self.pause)
        except BaseException as err:  # reported by stop()
            self.error = err

    def count(self) -> int:
        return len(self.sent)

    def stop(self, timeout: float = 60.0) -> list[str]:
        """Stop sending; the ids of every request sent, in order."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the sender did not stop"
        if self.error is not None:
            raise self.error
        return [i for i, _ in self.sent]


def answered_once_each(client: redis.Redis, stream: str, ids: list[str]
                       ) -> dict[str, dict[str, Any]]:
    """Every request answered, none twice (nothing died, so at-least-once delivered
    exactly once); the outputs by request id."""
    got = outputs(client, stream)
    counts = Counter(o["input_id"] for o in got)
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} of {len(ids)} requests never answered"
    assert set(counts) == set(ids), "outputs for requests that were not sent"
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} requests answered more than once"
    return {o["input_id"]: o for o in got}


def versions_by_consumer(client: redis.Redis, stream: str) -> dict[str, list[str]]:
    """The model versions each consumer answered with, in the order it answered (runs of
    one version collapsed): ``{"c": ["1", "2"]}`` is a swap from 1 to 2."""
    runs: dict[str, list[str]] = {}
    for out in outputs(client, stream):
        seq = runs.setdefault(out["consumer"], [])
        if not seq or seq[-1] != out["model_version"]:
            seq.append(out["model_version"])
    return runs


def change_champion_while_sending(
    scorers: SupportsScorers, name: str, client: redis.Redis, stream: str, *,
    model_name: str, old: Any, new: Any, timeout: float = 300.0,
    change: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Requests flow while the champion changes from ``old`` to ``new``: by default the
    ``champion`` alias of ``model_name`` moves and the scorers are told through the
    contract (``reload_scorer``); ``change`` does it another way (e.g. ``deploy_scorer``
    with the new version pinned: a rolling update). Checks that every request is answered
    exactly once (nothing died), each by the version that says it answered it (its
    prediction is that version's), every one sent once the scorers that held the old
    version are gone or swapped by ``new``, and no consumer went back to ``old``. Returns
    figures for the caller."""
    import mlflow
    from tests.oracle import pyfunc_predictions

    sender = Sender(client, stream, churn_rows(500)).start()
    try:
        wait_until(lambda: len(outputs(client, stream)) >= 100, timeout,
                   f"answers from version {old.version}")
        before = {c["name"] for c in client.xinfo_consumers(stream, "ctcd-scorers")}
        if change is None:
            mlflow.MlflowClient().set_registered_model_alias(model_name, "champion",
                                                             new.version)
            assert scorers.reload_scorer(name) >= 1
        else:
            change()
        wait_until(lambda: scorers.describe_scorer(name).model_versions == [new.version],
                   timeout, f"every replica scoring with version {new.version}")
        # Replaced replicas finish their last batch before leaving the group.
        wait_until(lambda: not _old_consumers_left(client, stream, before, new.version),
                   timeout, "the replaced replicas to leave the group")
        swapped_at = sender.count()
        wait_until(lambda: sender.count() >= swapped_at + 100, timeout, "more requests")
    finally:
        ids = sender.stop()
    wait_until(lambda: len(outputs(client, stream)) >= len(ids), timeout, "every answer")
    got = answered_once_each(client, stream, ids)
    assert {got[i]["model_version"] for i in ids} == {old.version, new.version}
    assert {got[i]["model_version"] for i in ids[swapped_at:]} == {new.version}
    runs = versions_by_consumer(client, stream)
    for consumer, seq in runs.items():
        assert seq in ([old.version], [new.version], [old.version, new.version]), (consumer,
                                                                                   seq)
    for version in (old, new):
        pairs = [(i, row) for i, row in sender.sent if got[i]["model_version"] == version.version]
        expected = pyfunc_predictions(version.uri, [row for _, row in pairs])
        assert [got[i]["prediction"] for i, _ in pairs] == expected
    return {"requests": len(ids), "after_swap": len(ids) - swapped_at,
            "by_version": dict(Counter(got[i]["model_version"] for i in ids)),
            "consumers": sorted(runs)}


def _old_consumers_left(client: redis.Redis, stream: str, before: set[Any], version: str
                        ) -> bool:
    """Whether a consumer from ``before`` that is not scoring with ``version`` is still in
    the group (a replica being replaced, still finishing its batch)."""
    from ctcd.streaming.settings import heartbeat_key

    for consumer in before:
        name = consumer.decode() if isinstance(consumer, bytes) else consumer
        if not any(c["name"] == consumer for c in client.xinfo_consumers(stream,
                                                                          "ctcd-scorers")):
            continue
        beat = client.get(heartbeat_key(stream, "ctcd-scorers", name))
        if beat is None or json.loads(beat).get("model_version") != version:
            return True
    return False


def freeze_holding(pid: int, client: redis.Redis, stream: str, group: str, consumer: str,
                   attempts: int = 200) -> list[str]:
    """SIGSTOP the scorer process ``pid`` at a moment its consumer holds delivered,
    unacknowledged entries (it is then mid-batch); their ids. The caller kills it.

    A stopped scorer sends nothing more, but what it sent just before (the transaction
    that acknowledges a batch) may still sit in Redis's socket buffer. So the entries are
    read once the process is seen stopped and again after a pause; only entries still held
    then are returned."""
    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        _wait_stopped(pid)
        first = _pending_of(client, stream, group, consumer)
        time.sleep(0.2)
        held = _pending_of(client, stream, group, consumer)
        if held and held == first:
            return held
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"never caught {consumer} holding entries")


def _pending_of(client: redis.Redis, stream: str, group: str, consumer: str) -> list[str]:
    held = client.xpending_range(stream, group, min="-", max="+", count=100_000,
                                 consumername=consumer)
    return [h["message_id"].decode() for h in held]


def _wait_stopped(pid: int) -> None:
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if stat.read_text().rpartition(")")[2].split()[0] in ("T", "t"):  # the state field
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop on SIGSTOP")
