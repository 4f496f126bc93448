"""Prediction sinks: a partition is replaced in one transaction (a failed write leaves the
previous rows), and ``scored`` tells which partitions a version has scored. SQLite through a
real Airflow connection and ``common.sql`` hook; Parquet in a temporary directory."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest

from ctcd.batch.chunk import ScoredChunk
from ctcd.batch.sinks import ParquetSink, PredictionsLocked, SqlSink
from ctcd.errors import InvalidParams

DAY = date(2026, 11, 20)


def _chunk(rows: int, version: str = "3", rejects: int = 0) -> ScoredChunk:
    when = pd.Timestamp(datetime(2026, 11, 21, tzinfo=UTC))
    predictions = pd.DataFrame({
        "input_row": range(rows), "customer_id": [f"c{i}" for i in range(rows)],
        "prediction": [i % 2 for i in range(rows)], "model_name": "m",
        "model_version": version, "scored_at": when})
    bad = pd.DataFrame({"input_row": range(rows, rows + rejects),
                        "reason": ["age: expected an integer"] * rejects,
                        "data": ['{"age": "x"}'] * rejects, "model_name": "m",
                        "model_version": version, "scored_at": when})
    return ScoredChunk(predictions, bad)


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> SqlSink:
    db = tmp_path / "p.db"
    monkeypatch.setenv("AIRFLOW_CONN_SINK_TEST", f"sqlite://{quote(str(db), safe='')}")
    return SqlSink("sink_test", dataset="churn", run_id="run-1", id_column="customer_id")


def test_sql_partition_is_replaced_and_a_failed_write_keeps_the_old_rows(sink: SqlSink) -> None:
    with sink.partition(DAY) as writer:
        writer.write(_chunk(10, rejects=2))
        writer.write(_chunk(5))
    assert sink.count("predictions", DAY) == 15
    assert sink.count("prediction_rejects", DAY) == 2
    assert sink.scored("3") == {DAY} and sink.scored("4") == set()

    with pytest.raises(RuntimeError), sink.partition(DAY) as writer:
        writer.write(_chunk(4, version="4"))
        raise RuntimeError("the scoring died mid-partition")
    assert sink.count("predictions", DAY) == 15  # rolled back: the previous run's rows
    assert sink.scored("3") == {DAY}

    with sink.partition(DAY) as writer:
        writer.write(_chunk(4, version="4"))
    assert sink.count("predictions", DAY) == 4 and sink.count("prediction_rejects", DAY) == 0
    assert sink.scored("4") == {DAY} and sink.scored("3") == set()


def test_sql_rows_carry_lineage(sink: SqlSink, tmp_path: Path) -> None:
    with sink.partition(DAY) as writer:
        writer.write(_chunk(2, rejects=1))
    with sqlite3.connect(tmp_path / "p.db") as conn:
        rows = conn.execute("SELECT dataset, partition_date, row_id, prediction, model_name, "
                            "model_version, dag_run_id, scored_at FROM predictions").fetchall()
        [reject] = conn.execute("SELECT input_row, reason, data FROM prediction_rejects")
    assert rows[1] == ("churn", "2026-11-20", "c1", 1.0, "m", "3", "run-1",
                       "2026-11-21T00:00:00+00:00")
    assert reject == (2, "age: expected an integer", '{"age": "x"}')


def test_sql_refuses_a_table_name_that_is_not_an_identifier() -> None:
    with pytest.raises(InvalidParams, match="not a plain SQL table name"):
        SqlSink("x", dataset="d", run_id="r", id_column="id", table="p; DROP TABLE x")


def test_sql_names_a_missing_connection(airflow_home: Path) -> None:
    with pytest.raises(InvalidParams, match="AIRFLOW_CONN_NO_SUCH_DB"):
        SqlSink("no_such_db", dataset="d", run_id="r", id_column="id").scored("1")


def test_parquet_partition_is_replaced_atomically(tmp_path: Path) -> None:
    sink = ParquetSink(f"file://{tmp_path}", dataset="churn", run_id="run-1")
    predictions, rejects = sink.files(DAY)
    with sink.partition(DAY) as writer:
        writer.write(_chunk(6, rejects=1))
    assert len(pd.read_parquet(predictions)) == 6 and len(pd.read_parquet(rejects)) == 1
    with pytest.raises(RuntimeError), sink.partition(DAY) as writer:
        writer.write(_chunk(2, version="4"))
        raise RuntimeError("died")
    assert len(pd.read_parquet(predictions)) == 6 and sink.scored("3") == {DAY}
    with sink.partition(DAY) as writer:
        writer.write(_chunk(3, version="4"))
    assert len(pd.read_parquet(predictions)) == 3 and not rejects.exists()
    assert sink.scored("4") == {DAY}
    assert sorted(p.name for p in predictions.parent.iterdir()) == ["predictions.parquet"]


def _write_slowly(conn_id: str, day: date, chunks: int, pause: float, start: Any) -> None:
    """One mapped task's write: a partition in ``chunks`` chunks, ``pause`` s of scoring each."""
    sink = SqlSink(conn_id, dataset="churn", run_id=f"run-{day}", id_column="customer_id")
    start.wait(60)
    with sink.partition(day) as writer:
        for _ in range(chunks):
            time.sleep(pause)
            writer.write(_chunk(50, rejects=1))


def test_sql_sqlite_partitions_written_by_concurrent_processes_all_land(
    sink: SqlSink, tmp_path: Path
) -> None:
    # Three processes score a partition each, at once, for longer than SQLite's default 5 s
    # busy wait; each holds its rows until its partition is complete.
    context = multiprocessing.get_context("fork")
    start = context.Event()
    days = [DAY - timedelta(days=i) for i in range(3)]
    writers = [context.Process(target=_write_slowly, args=(sink.conn_id, day, 4, 1.6, start))
               for day in days]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(180)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    with sqlite3.connect(tmp_path / "p.db") as conn:
        rows = conn.execute("SELECT partition_date, COUNT(*), COUNT(DISTINCT dag_run_id) "
                            "FROM predictions GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(day.isoformat(), 200, 1) for day in sorted(days)]
    assert {sink.count("prediction_rejects", day) for day in days} == {4}


def test_sql_sqlite_lock_held_through_every_attempt_fails_clearly_and_keeps_the_rows(
    sink: SqlSink, tmp_path: Path
) -> None:
    with sink.partition(DAY) as writer:
        writer.write(_chunk(7))
    impatient = SqlSink(sink.conn_id, dataset="churn", run_id="run-2", id_column="customer_id",
                        busy_timeout=0.2, lock_attempts=2)
    holder = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer that does not let go
    try:
        expected = r"locked by other writers through 2 attempts.*rows are kept.*PostgreSQL"
        with pytest.raises(PredictionsLocked, match=expected), impatient.partition(DAY) as writer:
            writer.write(_chunk(3))
    finally:
        holder.rollback()
        holder.close()
    assert sink.count("predictions", DAY) == 7

    # Released while the transaction waits: a later attempt goes through.
    holder = sqlite3.connect(tmp_path / "p.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, holder.rollback)
    release.start()
    patient = SqlSink(sink.conn_id, dataset="churn", run_id="run-3", id_column="customer_id",
                      busy_timeout=0.2, lock_attempts=10)
    try:
        with patient.partition(DAY) as writer:
            writer.write(_chunk(3))
    finally:
        release.join()
        holder.close()
    assert sink.count("predictions", DAY) == 3
