"""The batch_inference steps outside Airflow's task plumbing: rows from a SQL query through
an Airflow connection (SQLite), scored in process from the registry into Parquet, with the
model version a serving event names."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from urllib.parse import quote

import mlflow
import pandas as pd
import pytest
from tests.data.messy_csv import write_messy_csv

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec
from ctcd.errors import InvalidParams
from ctcd.pipelines import batch_inference as pipeline
from ctcd.tracking import Tracking

SPEC = load_spec("churn")
DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
MODEL = "churn-batch-pipeline"


@pytest.fixture(scope="module")
def version(model_factory) -> str:
    registered = model_factory(name=MODEL, kind="logistic_regression")
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", registered.version)
    return registered.version


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> Path:
    db = tmp_path / "warehouse.db"
    frames = [generate_snapshot(day, 300).drop(columns=[SPEC.label.name]) for day in DAYS]
    with sqlite3.connect(db) as conn:
        pd.concat(frames).astype({"customer_id": str, "snapshot_date": str, "contract": str,
                                  "payment_method": str, "internet_service": str,
                                  "region": str}).to_sql("churn_scoring", conn, index=False)
    monkeypatch.setenv("AIRFLOW_CONN_CTCD_DATA", f"sqlite://{quote(str(db), safe='')}")
    return db


def test_sql_source_in_process_to_parquet_with_the_events_version(
    warehouse: Path, ctcd_home: Path, mlflow_server: str, version: str
) -> None:
    tracking = Tracking(mlflow_server)
    conf = {"source": "sql", "sink": "parquet", "model_name": MODEL, "chunk_rows": 128}
    planned = pipeline.plan(conf, {"model_name": MODEL, "version": version}, tracking)
    assert planned["version"] == version
    assert planned["partitions"] == [d.isoformat() for d in DAYS]
    for day in planned["partitions"]:
        summary = pipeline.score_partition(conf, planned, day, "run-1", tracking)
        assert summary["rows"] == summary["scored"] == 300
        assert summary["versions"] == {version: 300} and summary["rejected"] == 0
    out = pd.read_parquet(ctcd_home / "predictions" / "churn" / f"date={DAYS[0].isoformat()}"
                          / "predictions.parquet")
    assert len(out) == 300 and set(out["model_version"]) == {version}
    assert set(out["snapshot_date"]) == {DAYS[0].isoformat()}
    # Both partitions are now scored by this version: nothing is left to plan.
    assert pipeline.plan(conf, None, tracking)["partitions"] == []


def test_a_partition_not_in_the_source_is_refused(
    warehouse: Path, ctcd_home: Path, mlflow_server: str, version: str
) -> None:
    conf = {"source": "sql", "sink": "parquet", "model_name": MODEL,
            "partitions": ["2026-10-01"]}
    with pytest.raises(InvalidParams, match=r"partitions \['2026-10-01'\] are not in the source"):
        pipeline.plan(conf, None, Tracking(mlflow_server))


def test_a_landed_csv_partition_with_unparsable_lines_is_scored_around_them(
    tmp_path: Path, ctcd_home: Path, mlflow_server: str, version: str
) -> None:
    day = DAYS[0]
    frame = generate_snapshot(day, 300).drop(columns=[SPEC.label.name])
    messy = write_messy_csv(frame, tmp_path / "landing" / f"date={day}" / "rows.csv")
    tracking = Tracking(mlflow_server)
    conf = {"source": "landing", "landing_uri": f"file://{tmp_path / 'landing'}/",
            "sink": "parquet", "model_name": MODEL, "chunk_rows": 100,
            "max_reject_share": 0.5}
    planned = pipeline.plan(conf, None, tracking)
    summary = pipeline.score_partition(conf, planned, day.isoformat(), "run-1", tracking)
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (300, 296, 4)
    assert summary["reject_reasons"] == {"unparsable": 3, "age": 1}
    folder = ctcd_home / "predictions" / "churn" / f"date={day.isoformat()}"
    out = pd.read_parquet(folder / "predictions.parquet")
    assert out["customer_id"].tolist() == frame["customer_id"].iloc[messy.good].tolist()
    rejects = pd.read_parquet(folder / "rejects.parquet")
    lines = rejects[rejects["reason"].str.startswith("unparsable")]
    assert [r.split(" of ")[0] for r in lines["reason"]] == [
        f"unparsable: line {n}" for n in messy.bad_lines]
    assert lines["data"].tolist() == list(messy.bad_lines.values())

    strict = {**conf, "max_reject_share": 0.01}
    with pytest.raises(pipeline.TooManyRejects, match=r"4 of 300 rows rejected"):
        pipeline.score_partition(strict, planned, day.isoformat(), "run-2", tracking)
