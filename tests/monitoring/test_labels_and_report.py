"""Delayed labels joined by row id, and the report files (they exist and open)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec
from ctcd.monitoring.drift import compare
from ctcd.monitoring.labels import (
    live_accuracy,
    live_metric,
    live_metric_of,
    read_labels,
    record_labels,
    row_ids,
)
from ctcd.monitoring.reference import build_reference, label, prediction_reference
from ctcd.monitoring.report import write_report


def test_row_ids_survive_the_json_round_trip_of_a_request() -> None:
    spec = load_spec("churn")
    frame = generate_snapshot(date(2026, 4, 1), rows=50)
    sent = frame[list(spec.feature_names)]
    # As the request log gives them back: ints as floats for double columns, float32 noise.
    logged = sent.astype({"tenure_months": "float64", "monthly_charges": "float32"})
    assert row_ids(sent, spec) == row_ids(logged, spec)
    assert len(set(row_ids(sent, spec))) == 50
    changed = sent.assign(region="north" if sent["region"][0] != "north" else "south")
    assert row_ids(changed, spec)[0] != row_ids(sent, spec)[0]


def test_labels_recorded_later_give_live_accuracy(tmp_path: Path) -> None:
    spec = load_spec("churn")
    frame = generate_snapshot(date(2026, 4, 1), rows=200)
    path = tmp_path / "labels.sqlite"
    assert record_labels(frame.head(100), spec, path) == 100
    ids = row_ids(frame, spec)
    found = read_labels(ids, path)
    assert len(found) == 100 and set(found.values()) <= {"0", "1"}
    predictions = frame[spec.label.name].tolist()
    predictions[:10] = [1 - p for p in predictions[:10]]  # 10 wrong among the labelled rows
    accuracy, labelled = live_accuracy(ids, predictions, found)
    assert labelled == 100 and accuracy == 0.9
    # A later label for the same row replaces the earlier one.
    record_labels(frame.head(1).assign(**{spec.label.name: 1 - frame[spec.label.name][0]}),
                  spec, path)
    assert read_labels(ids[:1], path)[ids[0]] == str(1 - frame[spec.label.name][0])
    assert live_accuracy(ids, predictions, {}) == (None, 0)
    assert read_labels(ids, tmp_path / "absent.sqlite") == {}


def test_live_metrics_follow_the_task(tmp_path: Path) -> None:
    from sklearn.metrics import f1_score, mean_squared_error

    truths = [1.5, 2.0, 4.0, 10.0]
    guesses = [1.0, 2.5, 4.0, 7.0]
    rmse, rows = live_metric("regression", [label(t) for t in truths], guesses)
    assert rows == 4 and rmse == pytest.approx(mean_squared_error(truths, guesses) ** 0.5)
    classes = ["0", "1", "2", "2", "1", "0"]
    guessed = [0, 1, 1, 2, 1, 2]
    f1, _ = live_metric("multiclass", classes, guessed)
    assert f1 == pytest.approx(f1_score(classes, [str(g) for g in guessed], average="macro"))
    accuracy, _ = live_metric("binary", ["1", "0", "1"], [1, 1, 1])
    assert accuracy == pytest.approx(2 / 3)
    assert live_metric("regression", [], []) == (None, 0)
    # Only the rows whose label has arrived count.
    assert live_metric_of("binary", ["a", "b", "c"], [1, 0, 1], {"a": "1", "c": "0"}) == (0.5, 2)


def test_a_regression_reference_profiles_numbers_and_keeps_its_rmse() -> None:
    values = np.linspace(10.0, 300.0, 500)
    reference = prediction_reference(values + 5.0, values, task="regression")
    assert reference["kind"] == "numeric" and reference["task"] == "regression"
    assert reference["holdout_metric"] == {"name": "rmse", "value": pytest.approx(5.0)}
    assert "holdout_accuracy" not in reference
    # Without the task, few whole values would look like classes; the task says otherwise.
    whole = np.asarray([100.0, 200.0] * 50)
    assert prediction_reference(whole, task="regression")["kind"] == "numeric"
    assert prediction_reference(whole)["kind"] == "categorical"


def test_report_files_exist_and_open(tmp_path: Path) -> None:
    spec = load_spec("churn")
    train = generate_snapshot(date(2026, 4, 1), rows=3_000)
    reference = build_reference(train, spec, train[spec.label.name], train[spec.label.name])
    served = generate_snapshot(date(2026, 4, 2), rows=800, drift=1.0)
    result = compare(reference, served[list(spec.feature_names)],
                     served[spec.label.name].tolist())
    summary = {"model_name": "churn-classifier", "model_version": "3", "status": "drift",
               "retrain": True, "samples": 800, "reasons": list(result.reasons),
               "checked_at": "20260402T100000Z"}
    files = write_report(tmp_path / "report", summary, result)
    assert files.csv is not None and files.png is not None
    table = pd.read_csv(files.csv)
    assert list(table["name"]) == [*spec.feature_names, "(prediction)"]
    assert table.loc[table["name"] == "contract", "drifted"].item()
    assert np.isnan(table.loc[table["name"] == "region", "ks_statistic"].item())
    document = json.loads(files.json.read_text())
    assert document["status"] == "drift" and len(document["features"]) == 12
    assert document["features"][0]["bins"] and document["features"][0]["current_shares"]
    with Image.open(files.png) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 500
    page = files.html.read_text()
    assert "data:image/png;base64," in page and "<tr class='drift'><td>contract" in page


def test_a_report_without_a_comparison_says_why(tmp_path: Path) -> None:
    summary = {"model_name": "m", "model_version": "1", "status": "insufficient_data",
               "samples": 12, "reasons": ["only 12 served rows"], "checked_at": "x"}
    files = write_report(tmp_path / "r", summary, None)
    assert files.csv is None and files.png is None
    assert json.loads(files.json.read_text())["features"] == []
    assert "only 12 served rows" in files.html.read_text()
