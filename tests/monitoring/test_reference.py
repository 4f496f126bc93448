"""Reference statistics of a churn snapshot, built from the data set spec."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec
from ctcd.errors import CtcdError
from ctcd.monitoring.reference import (
    FORMAT,
    SKETCH_POINTS,
    build_reference,
    flatten_predictions,
    label,
    prediction_reference,
)


def test_churn_reference_covers_every_feature_of_the_spec() -> None:
    spec = load_spec("churn")
    frame = generate_snapshot(date(2026, 3, 1), rows=3_000)
    truth = frame[spec.label.name].to_numpy()
    guesses = truth.copy()
    guesses[:300] = 1 - guesses[:300]  # 90 % right
    doc = json.loads(json.dumps(build_reference(frame, spec, guesses, truth)))  # JSON-able
    assert doc["format"] == FORMAT and doc["dataset"] == "churn" and doc["rows"] == 3_000
    assert list(doc["features"]) == list(spec.feature_names)
    for name in spec.numeric_features:
        stats = doc["features"][name]
        assert stats["kind"] == "numeric" and stats["nulls"] == 0
        assert len(stats["shares"]) == len(stats["edges"]) + 1
        assert sum(stats["shares"]) == pytest.approx(1.0, abs=1e-4)
        assert len(stats["sketch"]) == SKETCH_POINTS
        assert stats["min"] <= stats["sketch"][0] <= stats["sketch"][-1] <= stats["max"]
    for name in spec.categorical_features:
        shares = doc["features"][name]["shares"]
        assert set(shares) == set(spec.categories[name])
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    predictions = doc["predictions"]
    assert predictions["kind"] == "categorical" and set(predictions["shares"]) == {"0", "1"}
    assert predictions["holdout_accuracy"] == pytest.approx(0.9)
    assert len(json.dumps(doc)) < 100_000  # small enough to log with every model


def test_missing_feature_is_refused_naming_it() -> None:
    spec = load_spec("churn")
    frame = generate_snapshot(date(2026, 3, 1), rows=100).drop(columns=["age"])
    with pytest.raises(CtcdError, match="age"):
        build_reference(frame, spec, np.zeros(100))


def test_scores_get_a_numeric_profile_and_classes_a_categorical_one() -> None:
    scores = prediction_reference(np.linspace(0, 1, 500))
    assert scores["kind"] == "numeric" and len(scores["edges"]) == 11
    classes = prediction_reference(np.array([0.0, 1.0, 1.0, 0.0]))
    assert classes["kind"] == "categorical" and classes["shares"] == {"0": 0.5, "1": 0.5}


def test_predictions_are_flattened_from_every_output_shape() -> None:
    assert flatten_predictions([1, 0, 1]).tolist() == [1, 0, 1]
    assert flatten_predictions([[0.2, 0.8], [0.9, 0.1]]).tolist() == [0.8, 0.1]
    assert flatten_predictions([{"label": "a"}, {"label": "b"}]).tolist() == ["a", "b"]
    assert flatten_predictions(np.array([[1], [0]])).tolist() == [1, 0]
    assert [label(v) for v in (1.0, np.int64(2), True, "x")] == ["1", "2", "1", "x"]
