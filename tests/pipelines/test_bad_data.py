"""Bad inputs, as real files dropped in a landing location: each stops the run in ingest or
validate, with an error naming the fault; nothing new is registered and the champion stays.

(The same through a real Airflow run, with a champion serving: tests/dags/
test_continuous_training_e2e.py.)
"""

from __future__ import annotations

import gzip
import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.pipelines.landing import TODAY, Landing, Run, Stopped

from ctcd.data import watermark
from ctcd.models import ModelDefinition
from ctcd.pipelines.continuous_training import NothingNew
from ctcd.tracking import Tracking


def test_a_clean_partition_passes_and_is_kept_with_its_data_docs(landing: Landing, run: Run):
    landing.parquet(landing.frame(rows=3_000))
    ingested, validation = run()
    assert ingested["day"] == TODAY.isoformat() and ingested["rows"] == 3_000
    assert validation["success"] and validation["evaluated"] >= 50
    assert validation["docs_page"].endswith(".html")
    assert "<html" in Path(validation["docs_page"]).read_text().lower()


def test_columns_in_another_order_pass(landing: Landing, run: Run) -> None:
    frame = landing.frame()
    landing.parquet(frame[list(reversed(frame.columns))])
    assert run()[1]["success"]


def test_missing_column(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame().drop(columns=["support_calls"]))
    assert "support_calls: column_to_exist (column is missing)" in stopped()


def test_renamed_column(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame().rename(columns={"age": "customer_age"}))
    assert "age: column_to_exist (column is missing)" in stopped()


def test_wrong_dtype(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame(corruption="wrong_type"))
    message = stopped()
    assert "monthly_charges: column_values_to_be_in_type_list" in message


def test_nulls_over_the_limit(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame(corruption="nulls"))
    message = stopped()
    assert "monthly_charges: column_values_to_not_be_null (200 unexpected values" in message
    assert "contract: column_values_to_not_be_null" in message


def test_out_of_range_values(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame(corruption="out_of_range"))
    message = stopped()
    assert "age: column_values_to_be_between (200 unexpected values (10.00%), e.g. [-5" in message
    assert "tenure_months: column_values_to_be_between" in message


def test_unseen_category(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame(corruption="unseen_category"))
    assert "contract: column_values_to_be_in_set (200 unexpected values" in stopped()
    assert "lifetime" in stopped()


def test_an_empty_partition_folder(landing: Landing, stopped: Stopped) -> None:
    landing.folder()
    assert "holds no data files (*.parquet or *.csv): it is empty" in stopped()


def test_a_partition_of_zero_rows(landing: Landing, stopped: Stopped) -> None:
    landing.parquet(landing.frame().head(0))
    assert "table: table_row_count_to_be_between (observed 0" in stopped()


def test_a_truncated_parquet_file(landing: Landing, stopped: Stopped) -> None:
    path = landing.parquet(landing.frame())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "is not a readable Parquet file" in stopped()
    assert "truncated or corrupt" in stopped()


def test_a_file_that_is_not_parquet_at_all(landing: Landing, stopped: Stopped) -> None:
    (landing.folder() / "part-0.parquet").write_text("customer_id,age\n1,2\n")
    assert "is not a readable Parquet file" in stopped()


def test_a_csv_with_the_wrong_delimiter(landing: Landing, stopped: Stopped) -> None:
    """Read as one column, it fails validation; the message says why first."""
    path = landing.csv(landing.frame(), sep=";")
    message = stopped()
    assert message.startswith(f"Partition {TODAY} of data set 'churn' failed validation")
    assert (f"so nothing was trained or deployed: file://{path}: the delimiter looks wrong: its "
            "header line is one column when split at commas but 14 columns at each semicolon "
            "(;) ('customer_id;snapshot_date;") in message
    assert "the file seems to be semicolon-separated; CSV files are read comma-separated" in message
    assert "Failed expectations: customer_id: column_to_exist (column is missing)" in message


def test_a_gzip_file_named_csv_is_read_decompressed(
    landing: Landing, run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    frame = landing.frame()
    path = landing.folder() / "part-0.csv"
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    with caplog.at_level(logging.INFO, logger="ctcd.data"):
        ingested, validation = run()
    assert ingested["rows"] == len(frame) and validation["success"]
    assert f"file://{path} is gzip-compressed: reading it decompressed" in caplog.messages
    snapshot = pd.read_parquet(ingested["snapshot"])
    assert snapshot["customer_id"].tolist() == frame["customer_id"].tolist()


def test_a_truncated_gzip_file(landing: Landing, stopped: Stopped, ctcd_home: Path) -> None:
    data = gzip.compress(landing.frame().to_csv(index=False).encode())
    path = landing.folder() / "part-0.csv"
    path.write_bytes(data[: len(data) // 2])
    assert stopped().startswith(f"file://{path} is gzip-compressed, but it does not decompress")
    assert "truncated or corrupt" in stopped()
    assert not _snapshots(ctcd_home)


def test_a_header_repeated_mid_file(landing: Landing, stopped: Stopped, ctcd_home: Path) -> None:
    """Two files joined with their headers: the second header is line 1,002."""
    lines = landing.frame().to_csv(index=False).splitlines()
    path = landing.folder() / "part-0.csv"
    path.write_text("\n".join([*lines[:1001], lines[0], *lines[1001:]]) + "\n")
    assert stopped() == (
        f"file://{path}: line 1002 repeats the header line ('{lines[0][:120]}...'), as files "
        "joined with their headers do: remove it. Correct the file at its source and land it "
        "again.")
    assert not _snapshots(ctcd_home)


def test_text_among_numbers(landing: Landing, stopped: Stopped, ctcd_home: Path) -> None:
    """250 of 5,000 values of a numeric column are text: the true count, and the first of
    them with the lines they are on (the header is line 1)."""
    frame = landing.frame(rows=5_000).astype({"monthly_charges": object})
    rows = sorted(np.random.default_rng(7).choice(5_000, 250, replace=False))
    frame.loc[rows, "monthly_charges"] = "unknown"
    path = landing.csv(frame)
    examples = ", ".join(f"line {r + 2}: 'unknown'" for r in rows[:5])
    assert stopped() == (
        f"file://{path}: column 'monthly_charges' holds text in 250 of its 5,000 rows where "
        f"numbers are expected, e.g. {examples}. Correct the file at its source (an empty "
        "field is a missing value) and land it again.")
    assert not _snapshots(ctcd_home)


def test_columns_the_spec_does_not_know_are_left_out_with_a_warning(
    landing: Landing, run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    frame = landing.frame()
    known = list(frame.columns)
    for i in range(50):
        frame[f"extra_{i}"] = "text" if i % 2 else i
    path = landing.parquet(frame)
    with caplog.at_level(logging.WARNING, logger="ctcd.data"):
        ingested, validation = run()
    assert validation["success"]
    assert list(pd.read_parquet(ingested["snapshot"]).columns) == known
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        f"file://{path}: 50 column(s) not in the spec of data set 'churn' are left out of the "
        "snapshot: extra_0, extra_1, extra_2,")
    assert "extra_9 and 40 more. To train on them, add them to the spec's features" in warning


def test_a_file_of_another_data_set(landing: Landing, stopped: Stopped) -> None:
    path = landing.parquet(pd.DataFrame({"sku": range(2_000), "price": 1.5}))
    assert (f"nothing was trained or deployed: file://{path} has none of the columns of data "
            "set 'churn' (it has sku, price): is it a file of another data set?") in stopped()


def _snapshots(home: Path) -> list[Path]:
    """Snapshots (and their temporary files) ingest left: none when it stopped."""
    return [p for p in (home / "data").rglob("*") if p.is_file()]


def test_a_csv_in_another_encoding(landing: Landing, stopped: Stopped) -> None:
    frame = landing.frame()
    frame.loc[3, "region"] = "nørth"
    landing.csv(frame, encoding="latin-1")
    assert "is not a readable CSV file" in stopped() and "UTF-8" in stopped()


def test_a_good_csv_passes(landing: Landing, run: Run) -> None:
    landing.csv(landing.frame())
    assert run()[1]["success"]


def test_duplicate_ids(landing: Landing, stopped: Stopped) -> None:
    frame = landing.frame()
    landing.parquet(pd.concat([frame, frame.head(50)], ignore_index=True))
    assert "customer_id: column_values_to_be_unique (100 unexpected values" in stopped()


def test_a_label_with_one_class(landing: Landing, stopped: Stopped) -> None:
    frame = landing.frame()
    frame["churned"] = np.zeros(len(frame), dtype="int64")
    landing.parquet(frame)
    message = stopped()
    assert "churned: column_distinct_values_to_contain_set" in message
    assert ("churned: column_values_to_be_in_set [label balance: class 1 makes up at least "
            "2%] (") in message


def test_a_stale_partition(landing: Landing, stopped: Stopped) -> None:
    old = TODAY - timedelta(days=90)
    landing.parquet(landing.frame(day=old), day=old)
    assert "snapshot_date: column_min_to_be_between" in stopped()


def test_files_of_one_partition_with_different_columns(landing: Landing, stopped: Stopped):
    frame = landing.frame(rows=2_000)
    landing.parquet(frame.head(1_000), name="part-0")
    landing.parquet(frame.tail(1_000).drop(columns=["region"]), name="part-1")
    assert "every file of partition" in stopped()


def _trained_on(tracking: Tracking, landing: Landing, day, model: str) -> None:
    """A finished training run of ``model`` on ``day`` of this landing location (the
    watermark)."""
    run = tracking.client.create_run(
        tracking.experiment_id(),
        tags=watermark.training_tags(model, "churn", landing.uri.rstrip("/"), day),
    )
    tracking.client.set_terminated(run.info.run_id, "FINISHED")


def test_a_partition_older_than_the_last_one_trained_on(
    landing: Landing, tracking: Tracking, stopped: Stopped, churn: ModelDefinition
) -> None:
    yesterday = TODAY - timedelta(days=1)
    landing.parquet(landing.frame(day=yesterday), day=yesterday)
    _trained_on(tracking, landing, TODAY, churn.model_name)
    message = stopped()
    assert f"Partition {yesterday} of 'churn' is older than {TODAY}" in message
    assert "force=true" in message


def test_the_partition_trained_on_is_skipped_unless_forced(
    landing: Landing, tracking: Tracking, run: Run, churn: ModelDefinition
) -> None:
    landing.parquet(landing.frame())
    _trained_on(tracking, landing, TODAY, churn.model_name)
    with pytest.raises(NothingNew, match="trained on already"):
        run()
    assert run(force=True)[1]["success"]
