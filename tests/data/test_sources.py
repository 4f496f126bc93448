"""Sources against real files and a real SQLite database behind an Airflow connection."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from tests.data.messy_csv import MessyCsv, write_messy_csv

from ctcd.data.churn import churn_spec, generate_snapshot
from ctcd.data.csv_reader import BadLine
from ctcd.data.snapshots import notes_of
from ctcd.data.sources import LandingSource, SqlSource, copy_partition
from ctcd.errors import DataValidationError, InvalidParams

SPEC = churn_spec()


def test_landing_lists_dated_partitions_and_ignores_the_rest(tmp_path: Path) -> None:
    for name in ("date=2026-11-19", "date=2026-11-20", "date=2026-13-01", "other", "_tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "date=2026-11-18").write_text("a file, not a partition")
    source = LandingSource(f"file://{tmp_path}/", SPEC)
    assert source.partitions() == [date(2026, 11, 19), date(2026, 11, 20)]
    assert LandingSource(f"file://{tmp_path}/missing/", SPEC).partitions() == []


def test_copy_joins_parquet_and_csv_files_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctcd.data.sources as sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 500)
    day = date(2026, 11, 20)
    frame = generate_snapshot(day, 3_000)
    folder = tmp_path / "landing" / f"date={day}"
    folder.mkdir(parents=True)
    frame.head(2_000).to_parquet(folder / "a.parquet", index=False)
    # A CSV with the columns in another order and without the partition column: filled in.
    tail = frame.tail(1_000).drop(columns=["snapshot_date"])
    tail[list(reversed(tail.columns))].to_csv(folder / "b.csv", index=False)
    (folder / ".c.parquet.partial").write_text("being written")
    copied = copy_partition(
        LandingSource(f"file://{tmp_path / 'landing'}", SPEC), day, SPEC, tmp_path / "s.parquet"
    )
    assert copied.rows == 3_000 and [Path(f).name for f in copied.files] == ["a.parquet", "b.csv"]
    out = pd.read_parquet(copied.path)
    assert list(out.columns) == list(frame.columns)
    assert out["customer_id"].tolist() == frame["customer_id"].tolist()
    assert (out["snapshot_date"] == day.isoformat()).all()


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite database with two days of churn rows, as Airflow connection ``warehouse``."""
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        for day in (date(2026, 11, 19), date(2026, 11, 20)):
            generate_snapshot(day, 1_500).to_sql("churn", conn, if_exists="append", index=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return "warehouse"


def test_sql_source_lists_partitions_and_copies_one(warehouse: str, tmp_path: Path) -> None:
    source = SqlSource(warehouse, "SELECT * FROM churn;", SPEC)
    assert source.id == "sql://warehouse"
    assert source.partitions() == [date(2026, 11, 19), date(2026, 11, 20)]
    copied = copy_partition(source, date(2026, 11, 20), SPEC, tmp_path / "s.parquet")
    out = pd.read_parquet(copied.path)
    assert copied.rows == len(out) == 1_500
    assert set(out["snapshot_date"]) == {"2026-11-20"}
    assert list(out.columns) == list(SPEC.columns)


def test_sql_source_with_no_rows_for_the_day_is_an_empty_partition(
    warehouse: str, tmp_path: Path
) -> None:
    source = SqlSource(warehouse, "SELECT * FROM churn", SPEC)
    with pytest.raises(DataValidationError, match="is empty: the query returned no rows"):
        copy_partition(source, date(2026, 1, 1), SPEC, tmp_path / "s.parquet")


def test_sql_source_names_a_missing_connection() -> None:
    with pytest.raises(InvalidParams, match="No Airflow connection 'nowhere'"):
        SqlSource("nowhere", "SELECT 1", SPEC).partitions()


def _messy_landing(tmp_path: Path, day: date) -> MessyCsv:
    frame = generate_snapshot(day, 40)
    return write_messy_csv(frame, tmp_path / "landing" / f"date={day}" / "a.csv")


def test_a_training_copy_stops_at_a_csv_line_that_does_not_parse(tmp_path: Path) -> None:
    day = date(2026, 11, 20)
    _messy_landing(tmp_path, day)
    source = LandingSource(f"file://{tmp_path / 'landing'}", SPEC)
    with pytest.raises(DataValidationError, match=r"a\.csv: line 5 of a\.csv: 15 fields where "
                       r"the header has 14: '20261120-000003,"):
        copy_partition(source, day, SPEC, tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()


def test_a_scoring_read_hands_over_bad_lines_with_their_numbers(tmp_path: Path) -> None:
    """A byte-order mark, an empty line, a field too many or too few, an unterminated quote:
    the bad lines come with the file's own line numbers, every other row is read."""
    day = date(2026, 11, 20)
    messy = _messy_landing(tmp_path, day)
    bad: list[BadLine] = []
    source = LandingSource(f"file://{tmp_path / 'landing'}", SPEC)
    batches = [b for _, b in source.batches(day, on_bad_line=bad.append, text_columns=["age"])
               if not isinstance(b, pa.Schema)]
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 40 - 3
    assert table.column_names[0] == "customer_id"  # the byte-order mark is not in the name
    assert table.schema.field("age").type == pa.string()  # text: parsed row by row later
    assert table.column("age").to_pylist()[messy.text_age - 1] == "old"
    assert {b.line: b.text for b in bad} == messy.bad_lines
    assert [b.reason for b in bad][:2] == [
        "unparsable: line 5 of a.csv: 15 fields where the header has 14",
        "unparsable: line 15 of a.csv: 13 fields where the header has 14"]
    assert bad[2].found == 1


def test_a_file_with_none_of_the_spec_columns_is_kept_with_a_note(tmp_path: Path) -> None:
    """A ';'-separated file reads as one column: the snapshot keeps it for validation to
    fail on, and says why in its metadata; columns the spec does not know are left out."""
    day = date(2026, 11, 20)
    folder = tmp_path / "landing" / f"date={day}"
    folder.mkdir(parents=True)
    generate_snapshot(day, 100).to_csv(folder / "a.csv", sep=";", index=False)
    source = LandingSource(f"file://{tmp_path / 'landing'}", SPEC)
    copied = copy_partition(source, day, SPEC, tmp_path / "s.parquet")
    [column, partition] = pd.read_parquet(copied.path).columns
    assert column.startswith("customer_id;snapshot_date;") and partition == "snapshot_date"
    [note] = notes_of(copied.path)
    assert note.startswith(f"file://{folder / 'a.csv'}: the delimiter looks wrong")

    frame = generate_snapshot(day, 100).assign(extra="x")
    frame.to_csv(folder / "a.csv", index=False)
    copied = copy_partition(source, day, SPEC, tmp_path / "s.parquet")
    assert list(pd.read_parquet(copied.path).columns) == list(SPEC.columns)
    assert notes_of(copied.path) == []
