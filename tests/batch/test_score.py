"""Batch scoring of every task and natively served flavor, in process: floats of a regressor
kept exactly in Parquet and in the SQL sink, a classifier's labels, a Booster's columns of
probabilities. Answers are compared with MLflow's own loader (tests/flavored_models.py)."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from tests.flavored_models import FlavoredFactory, FlavoredModel

from ctcd.batch.chunk import Chunk, ScoredChunk
from ctcd.batch.model import ScoringModel, load_version
from ctcd.batch.score import score_chunks, score_file
from ctcd.batch.sinks import ParquetSink, SqlSink

pytestmark = pytest.mark.e2e

DAY = date(2026, 11, 20)


def _rows(model: FlavoredModel, copies: int = 25) -> pd.DataFrame:
    frame = pd.concat([model.frame] * copies, ignore_index=True)
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    return frame


def _scoring(model: FlavoredModel) -> ScoringModel:
    return load_version(model.name, model.version)


def score_chunk(model: ScoringModel, frame: pd.DataFrame) -> ScoredChunk:
    with score_chunks(model, [Chunk(frame)]) as chunks:
        (chunk,) = chunks
    return chunk


@pytest.mark.parametrize("kind", ["xgboost-regression", "lightgbm-regression",
                                  "lightgbm-numeric", "xgboost-multiclass",
                                  "sklearn-multiclass"])
def test_a_file_is_scored_with_mlflows_answers(kind: str, flavored_model: FlavoredFactory,
                                               tmp_path: Path) -> None:
    model = flavored_model(kind)
    frame = _rows(model)
    source = tmp_path / "rows.parquet"
    frame.to_parquet(source, row_group_size=300)
    summary = score_file(_scoring(model), source, chunk_rows=400)
    assert (summary.rows, summary.scored, summary.rejected) == (len(frame), len(frame), 0)
    out = pd.read_parquet(tmp_path / "rows.parquet.predictions.parquet")
    expected = model.expected(frame[list(model.frame.columns)])
    assert out["row_id"].tolist() == frame["row_id"].tolist()
    if expected.dtype.kind in "iuf":
        assert out["prediction"].dtype == expected.dtype  # float32 stays float32
    assert out["prediction"].tolist() == expected.tolist()


def test_a_booster_with_probability_columns_gives_one_column_each(
    flavored_model: FlavoredFactory, tmp_path: Path
) -> None:
    model = flavored_model("xgboost-booster")
    frame = _rows(model, 5)
    chunk = score_chunk(_scoring(model), frame)
    expected = model.expected(frame[list(model.frame.columns)])
    assert expected.shape == (len(frame), 3)
    for i in range(3):
        assert np.array_equal(chunk.predictions[f"prediction_{i}"].to_numpy(), expected[:, i])


@pytest.mark.parametrize("kind", ["xgboost-regression", "lightgbm-regression",
                                  "xgboost-multiclass"])
def test_the_sinks_store_each_prediction_exactly(kind: str, flavored_model: FlavoredFactory,
                                                 tmp_path: Path, airflow_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A float32 regression answer is stored as its exact value (a double in SQL, a float
    in Parquet); integer labels as numbers equal to them."""
    model = flavored_model(kind)
    frame = _rows(model, 3)
    chunk = score_chunk(_scoring(model), frame)
    expected = model.expected(frame[list(model.frame.columns)])

    db = tmp_path / "p.db"
    monkeypatch.setenv("AIRFLOW_CONN_FLAVORS_SINK", f"sqlite://{quote(str(db), safe='')}")
    sql = SqlSink("flavors_sink", dataset="d", run_id="run-1", id_column="row_id")
    with sql.partition(DAY) as writer:
        writer.write(chunk)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT row_id, prediction, typeof(prediction) FROM predictions "
                              "ORDER BY input_row").fetchall()
    assert [r[0] for r in stored] == frame["row_id"].tolist()
    assert [r[1] for r in stored] == expected.tolist()
    assert {r[2] for r in stored} == {"real"}  # the column is DOUBLE PRECISION

    parquet = ParquetSink(str(tmp_path / "out"), dataset="d", run_id="run-1")
    with parquet.partition(DAY) as writer:
        writer.write(chunk)
    out = pd.read_parquet(parquet.files(DAY)[0])
    assert out["prediction"].dtype == expected.dtype
    assert np.array_equal(out["prediction"].to_numpy(), expected)
