"""Streaming scorers run by the ``local`` backend (its
:class:`ctcd.deployers.scorers.SupportsScorers` methods hand over to :class:`LocalScorers`),
with the machinery it runs model servers with: detached processes (own session, outliving
the task that started them), identified by pid + start time, a record of the desired state
in the backend's registry (``registry.db``, table ``scorers``), a file lock per scorer, logs
under ``servers_dir``.

A scorer deployment is ``replicas`` processes of ``python -m ctcd.streaming``, consumers
``<name>-0``, ``<name>-1``... of one group. Consumer names stay the same across restarts,
so a restarted replica first finishes the entries it held (nothing is lost by a restart
or an update). Whether a replica runs is observed: its process is alive *and* its heartbeat
key in Redis (renewed every second, expiring after ``heartbeat_ttl``) names that process.

The record holds what a restart needs (model reference, stream, group, options, tracking
server) and no secret: a password in the Redis URL is dropped from the record and taken
from ``CTCD_SCORER_REDIS_URL`` of whoever starts the scorer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ctcd.deployers.base import DEFAULT_TIMEOUT, redact_uri
from ctcd.deployers.local import process
from ctcd.deployers.local.locks import operation_lock
from ctcd.deployers.local.logs import read_log
from ctcd.deployers.local.store import utcnow
from ctcd.deployers.scorers import ReplicaStatus, ScorerConfig, ScorerInfo, ScorerNotFound
from ctcd.errors import InvalidParams, ServerStartFailed, ServerStopFailed
from ctcd.settings import Settings, get_settings

SCHEMA = """
CREATE TABLE IF NOT EXISTS scorers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    desired_state TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    processes     TEXT NOT NULL DEFAULT '[]',
    config        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    last_error    TEXT
);
"""
REDIS_URL_VARIABLE = "CTCD_SCORER_REDIS_URL"


def consumers(config: ScorerConfig) -> list[str]:
    """The replicas' consumer names: ``<name>-0``, ``<name>-1``..., the same across
    restarts."""
    return [f"{config.name}-{i}" for i in range(config.replicas)]


@dataclass(frozen=True)
class ScorerRecord:
    id: str
    name: str
    desired_state: str
    processes: tuple[tuple[int, float], ...]  # (pid, start time) per replica
    config: ScorerConfig
    created_at: str
    updated_at: str
    last_error: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ScorerRecord:
        data: dict[str, Any] = dict(row)
        data["processes"] = tuple(tuple(p) for p in json.loads(data["processes"]))
        data["config"] = ScorerConfig.from_dict(json.loads(data["config"]))
        return cls(**data)


class LocalScorers:
    """Start, stop, find and restart streaming scorers on this machine."""

    def __init__(self, settings: Settings | None = None, *,
                 command: Sequence[str] | None = None, poll_interval: float = 0.25) -> None:
        self.settings = settings or get_settings()
        self.command = list(command or [sys.executable, "-m", "ctcd.streaming"])
        self.dir = self.settings.servers_dir
        self.poll_interval = poll_interval

    # -- queries (pure) -------------------------------------------------------------------

    def find(self, *, name: str | None = None, model_uri: str | None = None,
             stream: str | None = None, running: bool = False) -> list[ScorerInfo]:
        if not (self.dir / "registry.db").exists():
            return []
        found = [self.describe(r) for r in self._all() if r.config.matches(
            r.id, name=name, model_uri=model_uri, stream=stream)]
        return [info for info in found if not running or info.state == "running"]

    def get(self, name: str) -> ScorerInfo:
        return self.describe(self._resolve(name))

    def describe(self, record: ScorerRecord) -> ScorerInfo:
        """Observed now: each replica's process and heartbeat."""
        beats = self._heartbeats(record)
        replicas = []
        for i, consumer in enumerate(consumers(record.config)):
            ref = _ref(record, i)
            alive = process.alive(ref)
            beat = beats.get(consumer)
            live_beat = beat if alive and beat and ref and beat.get("pid") == ref.pid else None
            state = "running" if live_beat else ("starting" if alive else "stopped")
            replicas.append(ReplicaStatus(
                consumer=consumer, state=state, heartbeat=live_beat,
                details={"pid": ref.pid if alive and ref else None,
                         "log": str(self._log_path(record, consumer))}))
        return ScorerInfo(id=record.id, name=record.name, backend="local",
                          config=record.config, desired_state=record.desired_state,
                          replicas=tuple(replicas), last_error=record.last_error,
                          details={"created_at": record.created_at,
                                   "updated_at": record.updated_at})

    # -- lifecycle ------------------------------------------------------------------------

    def deploy(self, config: ScorerConfig, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """Run ``config``: create the scorer, or restart it with the new config when it
        differs (replicas finish their pending entries on restart); unchanged otherwise."""
        config = replace(config, tracking_uri=config.tracking_uri
                         or redact_uri(self.settings.tracking_uri()))
        with self._locked(config.name, timeout):
            record = self._by_name(config.name)
            if record is None:
                record = self._insert(config)
            elif record.config == config and self.describe(record).state == "running":
                return self.describe(record)
            else:
                self._terminate(record, timeout=timeout, force=True)
                record = self._update(record.id, config=config, processes=[])
            return self._start(record, timeout)

    def start(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """Start the replicas that are not running, as last deployed."""
        record = self._resolve(name)
        with self._locked(record.name, timeout):
            return self._start(self._resolve(record.id), timeout)

    def restart(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        record = self._resolve(name)
        with self._locked(record.name, timeout):
            self._terminate(record, timeout=timeout, force=True)
            return self._start(self._resolve(record.id), timeout)

    def stop(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        """SIGTERM: each replica finishes the batch in hand, then exits."""
        record = self._resolve(name)
        with self._locked(record.name, timeout):
            self._update(record.id, desired_state="stopped")
            if not self._terminate(record, timeout=timeout, force=force):
                raise ServerStopFailed(f"streaming scorer {record.name!r} did not stop within "
                                       f"{timeout:.0f}s; retry with --force to kill it")

    def delete(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        record = self._resolve(name)
        self.stop(record.id, timeout, force)
        with self._locked(record.name, timeout), self._connect() as db:
            db.execute("DELETE FROM scorers WHERE id = ?", (record.id,))
        for consumer in consumers(record.config):
            self._log_path(record, consumer).unlink(missing_ok=True)

    def reload(self, name: str) -> int:
        """SIGHUP every running replica: it checks the model alias now. Returns how many."""
        import signal

        record, sent = self._resolve(name), 0
        for i in range(record.config.replicas):
            ref = _ref(record, i)
            if ref is not None and process.alive(ref):
                os.kill(ref.pid, signal.SIGHUP)
                sent += 1
        return sent

    def logs(self, name: str, *, replica: int | None = None, follow: bool = False,
             tail: int | None = None) -> Iterator[str]:
        """Replica ``replica``'s log; ``None``: every replica's, lines prefixed with the
        consumer (with ``follow``: the first replica's)."""
        record = self._resolve(name)
        names = consumers(record.config)
        if replica is not None and not 0 <= replica < len(names):
            raise InvalidParams(f"scorer {record.name!r} has replicas 0..{len(names) - 1}")
        if replica is None and (follow or len(names) == 1):
            replica = 0
        if replica is not None:
            index = replica
            return read_log(self._log_path(record, names[index]), follow=follow, tail=tail,
                            still_running=lambda: process.alive(
                                _ref(self._resolve(record.id), index)))
        return (f"[{consumer}] {line}" for consumer in names
                for line in read_log(self._log_path(record, consumer), follow=False,
                                     tail=tail, still_running=lambda: False))

    # -- internals ------------------------------------------------------------------------

    def _start(self, record: ScorerRecord, timeout: float) -> ScorerInfo:
        deadline = time.monotonic() + timeout
        config = record.config
        refs = list(record.processes) + [(0, 0.0)] * (config.replicas - len(record.processes))
        env = dict(os.environ)
        env["CTCD_HOME"] = str(self.settings.home)
        live_tracking = self.settings.tracking_uri()
        same = config.tracking_uri in (None, redact_uri(live_tracking))
        tracking = live_tracking if same else str(config.tracking_uri)
        env["MLFLOW_TRACKING_URI"] = env["CTCD_SCORER_TRACKING_URI"] = tracking
        live_redis = os.environ.get(REDIS_URL_VARIABLE, "")
        env[REDIS_URL_VARIABLE] = (live_redis if live_redis and redact_uri(live_redis)
                                   == config.redis_url else config.redis_url)
        try:
            for i, consumer in enumerate(consumers(config)):
                if process.alive(_ref(record, i)):
                    continue
                argv = [*self.command, "--model-uri", config.model_uri, "--stream",
                        config.stream, "--group", config.group, "--consumer", consumer]
                for key, value in config.options.items():
                    argv += [f"--{key.replace('_', '-')}", str(value)]
                log_path = self._log_path(record, consumer)
                with log_path.open("a") as fh:
                    fh.write(f"--- {utcnow()} starting {consumer} ({config.model_uri})\n")
                ref = process.spawn(argv, env=env, log_path=log_path)
                refs[i] = (ref.pid, ref.started)
                record = self._update(record.id, processes=refs, desired_state="running",
                                      last_error=None)
            return self._wait_running(record, deadline)
        except ServerStartFailed as err:
            self._terminate(record, timeout=10, force=True)
            self._update(record.id, desired_state="stopped", last_error=err.message[:2000])
            raise

    def _wait_running(self, record: ScorerRecord, deadline: float) -> ScorerInfo:
        while True:
            info = self.describe(record)
            if info.state == "running":
                return info
            for replica in info.replicas:
                if replica.state == "stopped":
                    log_path = self._log_path(record, replica.consumer)
                    raise ServerStartFailed(
                        f"streaming scorer {replica.consumer!r} exited before it was ready. "
                        f"Last log lines ({log_path}):\n{process.tail_text(log_path)}"
                    )
            if time.monotonic() >= deadline:
                raise ServerStartFailed(
                    f"streaming scorer {record.name!r} was not running within the timeout, so "
                    "it was stopped; see `ctcd streaming logs " + record.name + "`")
            time.sleep(self.poll_interval)

    def _terminate(self, record: ScorerRecord, *, timeout: float, force: bool) -> bool:
        done = True
        for i in range(len(record.processes)):
            done = process.terminate(_ref(record, i), timeout=timeout, force=force) and done
        return done

    def _heartbeats(self, record: ScorerRecord) -> dict[str, dict[str, Any]]:
        import redis

        from ctcd.streaming.settings import heartbeat_key

        config = record.config
        live = os.environ.get(REDIS_URL_VARIABLE, "")
        url = live if live and redact_uri(live) == config.redis_url else config.redis_url
        keys = [heartbeat_key(config.stream, config.group, c) for c in consumers(config)]
        try:
            with redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) as client:
                values = client.mget(keys)
        except redis.RedisError:
            return {}
        return {c: json.loads(v) for c, v in zip(consumers(config), values, strict=True) if v}

    def _log_path(self, record: ScorerRecord, consumer: str) -> Path:
        path = self.dir / "scorers" / record.id / f"{consumer}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.dir / "registry.db", timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.executescript(SCHEMA)
            yield db
        finally:
            db.close()

    def _all(self) -> list[ScorerRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM scorers ORDER BY created_at").fetchall()
        return [ScorerRecord.from_row(r) for r in rows]

    def _by_name(self, name: str) -> ScorerRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM scorers WHERE name = ?", (name,)).fetchone()
        return ScorerRecord.from_row(row) if row else None

    def _resolve(self, key: str) -> ScorerRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM scorers WHERE id = ? OR name = ?",
                             (key, key)).fetchone()
        if row is None:
            raise ScorerNotFound(key)
        return ScorerRecord.from_row(row)

    def _insert(self, config: ScorerConfig) -> ScorerRecord:
        now, scorer_id = utcnow(), uuid.uuid4().hex
        with self._connect() as db:
            db.execute("INSERT INTO scorers (id, name, desired_state, config, created_at,"
                       " updated_at) VALUES (?, ?, 'running', ?, ?, ?)",
                       (scorer_id, config.name, json.dumps(config.to_dict()), now, now))
        return self._resolve(scorer_id)

    def _update(self, scorer_id: str, **values: Any) -> ScorerRecord:
        if "config" in values:
            values["config"] = json.dumps(values["config"].to_dict())
        if "processes" in values:
            values["processes"] = json.dumps(values["processes"])
        values["updated_at"] = utcnow()
        columns = ", ".join(f"{k} = ?" for k in values)
        with self._connect() as db:
            db.execute(f"UPDATE scorers SET {columns} WHERE id = ?", (*values.values(), scorer_id))
        return self._resolve(scorer_id)

    def _locked(self, name: str, timeout: float) -> Any:
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(f"scorer:{name}".encode()).hexdigest()[:16]
        return operation_lock(self.dir / "locks" / f"{digest}.lock", timeout,
                              f"streaming scorer {name!r}")


def _ref(record: ScorerRecord, replica: int) -> process.ProcessRef | None:
    if replica >= len(record.processes):
        return None
    pid, started = record.processes[replica]
    return process.ProcessRef(pid, started) if pid else None
