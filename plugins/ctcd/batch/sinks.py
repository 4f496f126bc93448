"""Where a batch job's predictions and rejects go, one partition at a time, idempotently.

- :class:`SqlSink`: two tables through an Airflow connection's ``common.sql`` hook (SQLite
  by default, PostgreSQL in production). A partition is written in one transaction:
  ``DELETE`` its previous rows from both tables, ``INSERT`` the new ones, ``COMMIT``. A
  re-run replaces, never duplicates; a failed run leaves the previous rows. On PostgreSQL
  the rows go in chunk by chunk inside that transaction (row locks: partitions written at
  once do not wait for each other). SQLite takes one writer at a time for the whole file,
  so there the chunks are spooled to a private SQLite file while the partition is scored and
  the transaction only copies them in at the end (``BEGIN IMMEDIATE``, a busy timeout); a
  transaction that still finds the file locked is retried whole, a bounded number of times
  with backoff, then fails with :class:`PredictionsLocked`.
- :class:`ParquetSink`: ``<root>/date=YYYY-MM-DD/predictions.parquet`` and
  ``rejects.parquet`` under a local directory, each written beside itself and renamed into
  place at the end (:class:`ctcd.batch.files.FrameWriter`).

A sink is used as ``with sink.partition(day) as writer: writer.write(chunk)``.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ctcd.batch.chunk import ScoredChunk
from ctcd.batch.files import FrameWriter
from ctcd.errors import CtcdError, InvalidParams

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

PREDICTION_COLUMNS = ("dataset", "partition_date", "input_row", "row_id", "prediction",
                      "model_name", "model_version", "dag_run_id", "scored_at")
REJECT_COLUMNS = ("dataset", "partition_date", "input_row", "row_id", "reason", "data",
                  "model_name", "model_version", "dag_run_id", "scored_at")
_TYPES = {"dataset": "VARCHAR(200)", "partition_date": "VARCHAR(10)", "input_row": "BIGINT",
          "row_id": "VARCHAR(200)", "prediction": "DOUBLE PRECISION", "reason": "TEXT",
          "data": "TEXT", "model_name": "VARCHAR(200)", "model_version": "VARCHAR(40)",
          "dag_run_id": "VARCHAR(250)", "scored_at": "TIMESTAMP"}


class PredictionsLocked(CtcdError):
    """A SQLite predictions database stayed locked by other writers through every attempt."""

    status_code = 503


class PartitionWriter(Protocol):
    def write(self, chunk: ScoredChunk) -> None: ...


class Sink(Protocol):
    def partition(self, day: date) -> Any:
        """A context manager yielding a :class:`PartitionWriter` that replaces ``day``."""

    def scored(self, model_version: str) -> set[date]:
        """Partitions whose predictions all come from ``model_version``."""


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise InvalidParams(f"{what} {name!r} is not a plain SQL table name (letters, digits, "
                            "underscores, optionally schema.table)")
    return name


def _records(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    out = frame.reindex(columns=list(columns))
    out = out.astype(object).where(out.notna(), None)
    if "scored_at" in out:
        out["scored_at"] = [v.isoformat() if hasattr(v, "isoformat") else v
                            for v in out["scored_at"]]
    return list(out.itertuples(index=False, name=None))


class SqlSink:
    """Prediction and reject tables through Airflow connection ``conn_id``."""

    def __init__(self, conn_id: str, *, dataset: str, run_id: str, id_column: str,
                 table: str = "predictions", rejects_table: str = "prediction_rejects",
                 busy_timeout: float = 30.0, lock_attempts: int = 6) -> None:
        """``busy_timeout`` (seconds) and ``lock_attempts`` bound how long a partition's
        SQLite transaction waits for other writers: each attempt waits up to
        ``busy_timeout`` for the lock, then the whole transaction is retried after a backoff."""
        self.conn_id = conn_id
        self.dataset = dataset
        self.run_id = run_id
        self.id_column = id_column
        self.table = _identifier(table, "predictions_table")
        self.rejects_table = _identifier(rejects_table, "rejects_table")
        self.busy_timeout = busy_timeout
        self.lock_attempts = lock_attempts
        self._hook: Any = None

    @property
    def hook(self) -> Any:
        if self._hook is None:
            from airflow.sdk import BaseHook
            from airflow.sdk.exceptions import AirflowNotFoundException

            try:
                self._hook = BaseHook.get_connection(self.conn_id).get_hook()
            except AirflowNotFoundException as err:
                raise InvalidParams(
                    f"No Airflow connection {self.conn_id!r} for the predictions table: add it "
                    f"(Admin -> Connections, or AIRFLOW_CONN_{self.conn_id.upper()}, e.g. "
                    "sqlite:////path/predictions.db or postgresql://...) or set output_conn_id."
                ) from err
        return self._hook

    @property
    def is_sqlite(self) -> bool:
        return getattr(self.hook, "conn_type", "") == "sqlite"

    def _ddl(self) -> list[str]:
        statements = []
        for table, columns in ((self.table, PREDICTION_COLUMNS),
                               (self.rejects_table, REJECT_COLUMNS)):
            body = ", ".join(f"{c} {_TYPES[c]}" for c in columns)
            statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
            statements.append(f"CREATE INDEX IF NOT EXISTS {table.replace('.', '_')}_partition "
                              f"ON {table} (dataset, partition_date)")
        return statements

    def create_tables(self) -> None:
        for statement in self._ddl():
            self.hook.run(statement)

    def scored(self, model_version: str) -> set[date]:
        self.create_tables()
        p = self.hook.placeholder
        rows = self.hook.get_records(
            f"SELECT partition_date FROM {self.table} WHERE dataset = {p} GROUP BY "
            f"partition_date HAVING MIN(model_version) = {p} AND MAX(model_version) = {p}",
            parameters=(self.dataset, model_version, model_version))
        return {date.fromisoformat(str(r[0])) for r in rows}

    def count(self, table: str, day: date) -> int:
        p = self.hook.placeholder
        [(n,)] = self.hook.get_records(
            f"SELECT COUNT(*) FROM {_identifier(table, 'table')} WHERE dataset = {p} AND "
            f"partition_date = {p}", parameters=(self.dataset, day.isoformat()))
        return int(n)

    @contextmanager
    def partition(self, day: date) -> Iterator[_SqlWriter]:
        if self.is_sqlite:
            with self._sqlite_partition(day) as writer:
                yield writer
            return
        self.create_tables()
        conn = self.hook.get_conn()
        try:
            cursor = conn.cursor()
            p = self.hook.placeholder
            for table in (self.table, self.rejects_table):
                cursor.execute(f"DELETE FROM {table} WHERE dataset = {p} AND partition_date = {p}",
                               (self.dataset, day.isoformat()))
            writer = _SqlWriter(self, cursor, day)
            yield writer
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()


    # -- SQLite: spool while scoring, then one short replacing transaction -----------------
    @contextmanager
    def _sqlite_partition(self, day: date) -> Iterator[_SqlWriter]:
        with tempfile.TemporaryDirectory(prefix="ctcd-predictions-") as folder:
            path = Path(folder) / "spool.db"
            spool = sqlite3.connect(path, isolation_level=None)
            try:
                spool.execute("PRAGMA journal_mode = OFF")
                spool.execute("PRAGMA synchronous = OFF")
                for table, columns in (("predictions", PREDICTION_COLUMNS),
                                       ("rejects", REJECT_COLUMNS)):
                    body = ", ".join(f"{c} {_TYPES[c]}" for c in columns)
                    spool.execute(f"CREATE TABLE {table} ({body})")
                spool.execute("BEGIN")
                yield _SqlWriter(self, spool.cursor(), day,
                                 tables=("predictions", "rejects"), placeholder="?")
                spool.execute("COMMIT")
            finally:
                spool.close()
            self._replace_from(path, day)

    def _replace_from(self, spool: Path, day: date) -> None:
        """Replace partition ``day`` with the spooled rows in one transaction, retried whole
        while another writer holds the database."""
        started = time.monotonic()
        for attempt in range(1, self.lock_attempts + 1):
            try:
                self._replace_once(spool, day)
                return
            except sqlite3.OperationalError as err:
                if not _locked(err):
                    raise
                if attempt == self.lock_attempts:
                    raise PredictionsLocked(
                        f"the SQLite predictions database of connection {self.conn_id!r} "
                        f"({self.hook.get_uri()}) stayed locked by other writers through "
                        f"{attempt} attempts over {time.monotonic() - started:.0f} s, so "
                        f"partition {day.isoformat()} was not written (its previous rows are "
                        "kept). SQLite takes one writer at a time: score fewer partitions at "
                        "once, or point output_conn_id at PostgreSQL for parallel workers."
                    ) from err
                pause = min(2.0 ** attempt, 30.0) * random.uniform(0.5, 1.0)
                log.warning("predictions database locked (%s); retrying partition %s in "
                            "%.1f s (attempt %d of %d)", err, day, pause, attempt,
                            self.lock_attempts)
                time.sleep(pause)

    def _replace_once(self, spool: Path, day: date) -> None:
        conn = self.hook.get_conn()
        conn.isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT below
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("ATTACH DATABASE ? AS spool", (str(spool),))
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now (waits busy_timeout)
            for statement in self._ddl():
                conn.execute(statement)
            for table, source, columns in ((self.table, "predictions", PREDICTION_COLUMNS),
                                           (self.rejects_table, "rejects", REJECT_COLUMNS)):
                names = ", ".join(columns)
                conn.execute(f"DELETE FROM {table} WHERE dataset = ? AND partition_date = ?",
                             (self.dataset, day.isoformat()))
                conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM spool.{source}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()


def _locked(err: sqlite3.OperationalError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(err) or "busy" in str(err)


class _SqlWriter:
    def __init__(self, sink: SqlSink, cursor: Any, day: date, *,
                 tables: tuple[str, str] | None = None, placeholder: str | None = None) -> None:
        self.sink, self.cursor, self.day = sink, cursor, day
        # Checked at the first predictions written straight to the server's table (SQLite's
        # spool and tables take text in any column).
        self._typed = tables is not None
        p = placeholder or sink.hook.placeholder
        table, rejects = tables or (sink.table, sink.rejects_table)
        self._insert = {
            key: f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))})"
            for key, name, cols in ((sink.table, table, PREDICTION_COLUMNS),
                                    (sink.rejects_table, rejects, REJECT_COLUMNS))
        }

    def _frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out["dataset"] = self.sink.dataset
        out["partition_date"] = self.day.isoformat()
        out["dag_run_id"] = self.sink.run_id
        out["row_id"] = (frame[self.sink.id_column].astype(str)
                         if self.sink.id_column in frame else None)
        return out

    def write(self, chunk: ScoredChunk) -> None:
        predictions = chunk.predictions
        if len(predictions):
            if "prediction" not in predictions:
                outputs = [c for c in map(str, predictions.columns) if c.startswith("prediction_")]
                raise InvalidParams(f"the model returns several outputs {outputs}; the SQL "
                                    "table holds one prediction per row: use sink=parquet")
            if not self._typed:
                self._fit_prediction_column(predictions)
            self.cursor.executemany(self._insert[self.sink.table],
                                    _records(self._frame(predictions), PREDICTION_COLUMNS))
        if len(chunk.rejects):
            self.cursor.executemany(self._insert[self.sink.rejects_table],
                                    _records(self._frame(chunk.rejects), REJECT_COLUMNS))


    def _fit_prediction_column(self, predictions: pd.DataFrame) -> None:
        """Class labels that are text need a text column: the table's ``prediction`` column
        is made one while the table holds no other rows; after that, say what to do."""
        self._typed = True
        if (predictions["prediction"].dtype.kind in "iuf"
                or getattr(self.sink.hook, "conn_type", "") != "postgres"):
            return
        table = self.sink.table
        schema, _, name = table.rpartition(".")
        self.cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = %s AND "
            "column_name = 'prediction' AND table_schema = COALESCE(%s, current_schema())",
            (name, schema or None))
        found = self.cursor.fetchone()
        kind = str(found[0]) if found else "text"
        if kind in ("text", "character varying"):
            return
        self.cursor.execute(f"SELECT COUNT(*) FROM {table}")
        (rows,) = self.cursor.fetchone()
        if int(rows) == 0:
            self.cursor.execute(f"ALTER TABLE {table} ALTER COLUMN prediction TYPE TEXT")
            return
        example = predictions["prediction"].iloc[0]
        raise InvalidParams(
            f"the predictions table {table} has column prediction of type {kind}, holding "
            f"{rows} rows, and model {predictions['model_name'].iloc[0]} version "
            f"{predictions['model_version'].iloc[0]} answers text labels (e.g. {example!r}): "
            "write them to another table (the predictions_table Param) or make the column "
            f"text (ALTER TABLE {table} ALTER COLUMN prediction TYPE TEXT); partition "
            f"{self.day.isoformat()} was not written")


class ParquetSink:
    """``<root>/date=YYYY-MM-DD/{predictions,rejects}.parquet`` under a local directory."""

    def __init__(self, uri: str, *, dataset: str, run_id: str) -> None:
        path = uri.removeprefix("file://")
        if "://" in path:
            raise InvalidParams(f"output_uri {uri!r}: Parquet output goes to a local directory "
                                "(file://...); use sink=sql for a database")
        self.root = Path(path)
        self.dataset = dataset
        self.run_id = run_id

    def files(self, day: date) -> tuple[Path, Path]:
        folder = self.root / f"date={day.isoformat()}"
        return folder / "predictions.parquet", folder / "rejects.parquet"

    def scored(self, model_version: str) -> set[date]:
        import pyarrow.parquet as pq

        out = set()
        for path in self.root.glob("date=*/predictions.parquet"):
            versions = set(pq.read_table(path, columns=["model_version"]).column(0).to_pylist())
            if versions == {model_version}:
                out.add(date.fromisoformat(path.parent.name.removeprefix("date=")))
        return out

    @contextmanager
    def partition(self, day: date) -> Iterator[_ParquetWriter]:
        predictions, rejects = self.files(day)
        writer = _ParquetWriter(self, FrameWriter(predictions), FrameWriter(rejects))
        try:
            yield writer
        except BaseException:
            writer.out.abort()
            writer.bad.abort()
            raise
        writer.out.commit()
        writer.bad.commit()
        if not writer.out.rows:  # every row rejected: no predictions left from a previous run
            predictions.unlink(missing_ok=True)
        if not writer.bad.rows:
            rejects.unlink(missing_ok=True)


class _ParquetWriter:
    def __init__(self, sink: ParquetSink, out: FrameWriter, bad: FrameWriter) -> None:
        self.sink, self.out, self.bad = sink, out, bad

    def write(self, chunk: ScoredChunk) -> None:
        for frame, target in ((chunk.predictions, self.out), (chunk.rejects, self.bad)):
            if len(frame):
                frame = frame.assign(dataset=self.sink.dataset, dag_run_id=self.sink.run_id)
                target.write(frame)
