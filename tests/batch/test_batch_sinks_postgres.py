"""The SQL prediction tables on a real PostgreSQL server (Debian's, started for this module
on loopback) through an Airflow ``postgres`` connection: a partition is replaced in one
transaction, numbers keep a number column, class labels that are text get a text column,
and a number column already holding rows refuses text labels with what to do."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ctcd.batch.chunk import ScoredChunk
from ctcd.batch.sinks import SqlSink
from ctcd.errors import InvalidParams
from ctcd.stack.postgres import PostgresCluster
from ctcd.stack.processes import free_port

DAY = date(2026, 11, 20)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres"), free_port())
    cluster.init()
    server = subprocess.Popen(cluster.server_argv(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cluster.wait_ready(timeout=60, pid=server.pid)
        cluster.create_database("predictions")
        yield cluster
    finally:
        PostgresCluster.stop(server.pid)
        server.wait(30)
        cluster.remove()


def _sink(postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch, table: str,
          airflow_home: Path) -> SqlSink:
    url = postgres.url("predictions", driver="postgresql")
    monkeypatch.setenv("AIRFLOW_CONN_PREDICTIONS_PG", url)
    return SqlSink("predictions_pg", dataset="wine", run_id="run-1", id_column="wine_id",
                   table=table, rejects_table=f"{table}_rejects")


def _chunk(predictions: list[Any], version: str = "3") -> ScoredChunk:
    when = pd.Timestamp(datetime(2026, 11, 21, tzinfo=UTC))
    rows = len(predictions)
    return ScoredChunk(pd.DataFrame({
        "input_row": range(rows), "wine_id": [f"w{i}" for i in range(rows)],
        "prediction": predictions, "model_name": "m", "model_version": version,
        "scored_at": when}), pd.DataFrame())


def _column_type(sink: SqlSink, table: str) -> str:
    [(kind,)] = sink.hook.get_records(
        "SELECT data_type FROM information_schema.columns WHERE table_name = %s AND "
        "column_name = 'prediction'", parameters=(table,))
    return str(kind)


def test_numbers_keep_a_number_column_and_a_partition_is_replaced(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> None:
    sink = _sink(postgres, monkeypatch, "scores", airflow_home)
    for values in ([1.5, 2.5, 3.5], [7.25, 8.0]):
        with sink.partition(DAY) as writer:
            writer.write(_chunk(values))
    assert _column_type(sink, "scores") == "double precision"
    rows = sink.hook.get_records("SELECT prediction FROM scores ORDER BY input_row")
    assert [r[0] for r in rows] == [7.25, 8.0]
    assert sink.scored("3") == {DAY}


def test_text_labels_get_a_text_column(postgres: PostgresCluster,
                                       monkeypatch: pytest.MonkeyPatch,
                                       airflow_home: Path) -> None:
    sink = _sink(postgres, monkeypatch, "grades", airflow_home)
    assert sink.scored("3") == set()  # nothing written yet
    with sink.partition(DAY) as writer:
        writer.write(_chunk(["high", "low", "mid"]))
    assert _column_type(sink, "grades") == "text"
    rows = sink.hook.get_records("SELECT prediction FROM grades ORDER BY input_row")
    assert [r[0] for r in rows] == ["high", "low", "mid"]


def test_text_labels_into_a_number_column_with_rows_fail_clearly_and_keep_the_rows(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> None:
    sink = _sink(postgres, monkeypatch, "mixed", airflow_home)
    with sink.partition(DAY) as writer:
        writer.write(_chunk([0.5, 1.5]))
    later = date(2026, 11, 21)
    with (pytest.raises(InvalidParams, match=r"mixed.*prediction.*double precision.*text "
                                             r"labels.*predictions_table"),
          sink.partition(later) as writer):
        writer.write(_chunk(["high", "low"], version="4"))
    rows = sink.hook.get_records("SELECT prediction FROM mixed ORDER BY input_row")
    assert [r[0] for r in rows] == [0.5, 1.5]
