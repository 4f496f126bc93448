"""Sampled request/response log for monitoring, written off the request path.

A sampled request is put on a queue (a few microseconds); one background thread writes
queued entries to SQLite in batches. The ``model_monitoring`` DAG reads the table
``requests`` (one row per sampled request):

    ts TEXT (ISO-8601 UTC), model_name TEXT, model_version TEXT, protocol TEXT,
    rows INTEGER, inputs TEXT (JSON {column: [values]}), outputs TEXT (JSON list),
    latency_ms REAL

If the queue is full (the disk is slower than the traffic), entries are dropped and
counted rather than slowing requests down.
"""

from __future__ import annotations

import logging
import queue
import random
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ctcd.serving.protocols import ScoringRequest, jsonable

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    protocol TEXT NOT NULL, rows INTEGER NOT NULL, inputs TEXT NOT NULL,
    outputs TEXT NOT NULL, latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model_name, ts);
"""
_STOP = object()


class RequestLog:
    def __init__(self, path: Path, sample_rate: float, *, max_queue: int = 10_000,
                 flush_seconds: float = 0.5) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._flush_seconds = flush_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.executescript(SCHEMA)
        self._thread = threading.Thread(target=self._write_loop, name="request-log",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path | None, sample_rate: float) -> RequestLog:
        if path is None:
            from ctcd.settings import get_settings

            path = get_settings().home / "serving" / "requests.sqlite"
        return cls(path, sample_rate)

    def offer(self, *, model_name: str, version: str, protocol: str,
              request: ScoringRequest, output: Any, latency_ms: float) -> None:
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((datetime.now(UTC).isoformat(), model_name, version,
                                    protocol, request, output, latency_ms))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _write_loop(self) -> None:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get(timeout=self._flush_seconds
                                                 if len(items) < 500 else 0))
                except queue.Empty:
                    break
                if len(items) >= 500:
                    break
            if any(item is _STOP for item in items):
                stopping = True
                items = [item for item in items if item is not _STOP]
            rows = [self._row(item) for item in items]
            try:
                with db:
                    db.executemany("INSERT INTO requests VALUES (?,?,?,?,?,?,?,?)", rows)
            except sqlite3.Error:
                log.exception("could not write %d request-log rows to %s", len(rows),
                              self.path)
        db.close()

    @staticmethod
    def _row(item: tuple[Any, ...]) -> tuple[Any, ...]:
        ts, name, version, protocol, request, output, latency_ms = item
        if request.table is not None:
            inputs = {k: (v.tolist() if v.dtype.kind != "M" else v.astype(str).tolist())
                      for k, v in request.table.arrays.items()}
        else:
            inputs = jsonable(request.frame)
        opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        return (ts, name, version, protocol, request.rows,
                orjson.dumps(inputs, default=str, option=opts).decode(),
                orjson.dumps(jsonable(output), default=str, option=opts).decode(), latency_ms)
