"""Sampled request/response log for monitoring, written off the request path.

A sampled request is put on a queue (a few microseconds); one background thread writes
queued entries to SQLite in batches. The ``model_monitoring`` DAG reads the table
``requests`` (one row per sampled request):

    ts TEXT (ISO-8601 UTC), model_name TEXT, model_version TEXT, protocol TEXT,
    rows INTEGER, inputs TEXT (JSON {column: [values]}), outputs TEXT (JSON list),
    latency_ms REAL, request_id TEXT (the correlation id the client got back)

A shadow version's sample of disagreeing and failing requests (:mod:`.shadow`) goes to
the table ``shadow_samples``: at most N rows per shadow and worker process (``session``),
each ``slot`` replaced as the reservoir replaces it:

    session TEXT, slot INTEGER, ts TEXT, request_id TEXT, model_name TEXT,
    live_version TEXT, shadow_version TEXT, kind TEXT ('disagreement', 'error',
    'timeout'), rows INTEGER, inputs TEXT (JSON {column: [values]}), live_outputs TEXT,
    shadow_outputs TEXT (JSON; NULL when it failed), max_abs_difference REAL, error TEXT

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
    outputs TEXT NOT NULL, latency_ms REAL NOT NULL, request_id TEXT
);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model_name, ts);
CREATE TABLE IF NOT EXISTS shadow_samples (
    session TEXT NOT NULL, slot INTEGER NOT NULL, ts TEXT NOT NULL, request_id TEXT NOT NULL,
    model_name TEXT NOT NULL, live_version TEXT NOT NULL, shadow_version TEXT NOT NULL,
    kind TEXT NOT NULL, rows INTEGER NOT NULL, inputs TEXT NOT NULL, live_outputs TEXT NOT NULL,
    shadow_outputs TEXT, max_abs_difference REAL, error TEXT,
    PRIMARY KEY (session, slot)
);
"""
COLUMNS = ("ts, model_name, model_version, protocol, rows, inputs, outputs, latency_ms, "
           "request_id")
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
            _add_request_id(db)
        self._thread = threading.Thread(target=self._write_loop, name="request-log",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path | None, sample_rate: float) -> RequestLog:
        if path is None:
            from ctcd.settings import get_settings

            path = get_settings().home / "serving" / "requests.sqlite"
        return cls(path, sample_rate)

    def offer(self, *, model_name: str, version: str, protocol: str, request_id: str,
              request: ScoringRequest, output: Any, latency_ms: float) -> None:
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((datetime.now(UTC).isoformat(), model_name, version,
                                    protocol, request, output, latency_ms, request_id))
        except queue.Full:
            self.dropped += 1

    def offer_sample(self, session: str, slot: int, sample: dict[str, Any]) -> None:
        """A shadow's sample (see :meth:`ctcd.serving.shadow.Shadow._sample`), at ``slot``
        of its reservoir; never sampled away, dropped only when the queue is full."""
        try:
            self._queue.put_nowait(_Sample(session, slot, sample))
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
            rows = [self._row(item) for item in items if not isinstance(item, _Sample)]
            samples = [_sample_row(item) for item in items if isinstance(item, _Sample)]
            try:
                with db:
                    db.executemany(f"INSERT INTO requests ({COLUMNS}) VALUES "
                                   "(?,?,?,?,?,?,?,?,?)", rows)
                    db.executemany("INSERT OR REPLACE INTO shadow_samples VALUES "
                                   "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", samples)
            except sqlite3.Error:
                log.exception("could not write %d request-log rows to %s",
                              len(rows) + len(samples), self.path)
        db.close()

    @staticmethod
    def _row(item: tuple[Any, ...]) -> tuple[Any, ...]:
        ts, name, version, protocol, request, output, latency_ms, request_id = item
        return (ts, name, version, protocol, request.rows, _text(inputs_of(request)),
                _text(jsonable(output)), latency_ms, request_id)


class _Sample:
    __slots__ = ("sample", "session", "slot")

    def __init__(self, session: str, slot: int, sample: dict[str, Any]) -> None:
        self.session, self.slot, self.sample = session, slot, sample


def inputs_of(request: ScoringRequest) -> Any:
    """A request's checked input as JSON values, ``{column: [values]}`` for a table."""
    if request.table is not None:
        return {k: (v.tolist() if v.dtype.kind != "M" else v.astype(str).tolist())
                for k, v in request.table.arrays.items()}
    return jsonable(request.frame)


def sample_json(sample: dict[str, Any]) -> dict[str, Any]:
    """A shadow sample with its inputs as JSON values (it keeps the request itself)."""
    inputs = sample["inputs"]
    return {**sample, "inputs": inputs_of(inputs) if isinstance(inputs, ScoringRequest)
            else inputs}


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _text(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_OPTIONS).decode()


def _sample_row(item: _Sample) -> tuple[Any, ...]:
    s = sample_json(item.sample)
    return (item.session, item.slot, s["ts"], s["request_id"], s["model_name"],
            s["live_version"], s["shadow_version"], s["kind"], s["rows"], _text(s["inputs"]),
            _text(s["live"]), None if s["shadow"] is None else _text(s["shadow"]),
            s["max_abs_difference"], s["error"])


def _add_request_id(db: sqlite3.Connection) -> None:
    """A log written before correlation ids gets the column (its rows: NULL)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    if "request_id" not in columns:
        try:
            db.execute("ALTER TABLE requests ADD COLUMN request_id TEXT")
        except sqlite3.OperationalError as err:  # another worker added it meanwhile
            if "duplicate column" not in str(err):
                raise
