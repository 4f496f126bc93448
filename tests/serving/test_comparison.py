"""The shadow comparison's figures: distributions that merge without losing percentiles,
and the comparison of two answers output by output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctcd.serving.comparison import (
    Counts,
    compare,
    differences,
    latencies,
    merge,
    merge_states,
)


def test_percentiles_are_those_of_the_values_within_a_bucket() -> None:
    values = np.random.default_rng(0).lognormal(-7, 1.5, 20_000)  # latencies, seconds
    distribution = latencies()
    distribution.add(values[:10_000])
    for value in values[10_000:]:
        distribution.add_one(float(value))
    for q in (0.5, 0.95, 0.99):
        assert distribution.percentile(q) == pytest.approx(np.quantile(values, q), rel=0.07)
    assert distribution.max == values.max() and distribution.count == 20_000
    assert distribution.total == pytest.approx(values.sum())


def test_merged_parts_equal_the_whole_and_survive_json() -> None:
    rng = np.random.default_rng(1)
    parts = [np.concatenate([np.zeros(50), rng.exponential(0.01, 500)]) for _ in range(3)]
    whole = differences()
    whole.add(np.concatenate(parts))
    merged = differences()
    for part in parts:
        one = differences()
        one.add(part)
        merged.merge(differences().load(one.to_dict()))
    assert np.array_equal(merged.counts, whole.counts)
    assert (merged.zeros, merged.count, merged.max) == (150, 1650, whole.max)
    assert merged.percentile(0.05) == 0.0  # exact zeros stay exact
    assert merged.summary() == pytest.approx(whole.summary())  # the sums' rounding aside


def test_nan_and_inf_are_counted_apart() -> None:
    distribution = differences()
    distribution.add(np.array([0.1, np.nan, np.inf]))
    assert (distribution.count, distribution.nonfinite, distribution.max) == (1, 2, 0.1)
    assert differences().percentile(0.5) is None


def test_counts_merge_through_their_json() -> None:
    a, b = Counts(mirrored=3, answered=2, errors=1, label_rows=4, label_agreed=3), Counts(
        mirrored=2, dropped=5, answered=2, label_rows=2, label_agreed=2)
    a.live_latency.add_one(0.001)
    b.live_latency.add_one(0.003)
    total = merge([a.to_dict(), b.to_dict()])
    assert (total["mirrored"], total["dropped"], total["answered"], total["errors"]) == (
        5, 5, 4, 1)
    assert total["error_rate"] == pytest.approx(1 / 5)
    assert total["drop_rate"] == pytest.approx(5 / 10)
    assert total["labels"]["agreement"] == pytest.approx(5 / 6)
    assert total["latency_ms"]["live"]["max"] == pytest.approx(3.0)


def test_labels_must_be_equal_numbers_within_the_tolerance() -> None:
    labels = compare(np.array([1, 0, 1]), pd.Series([1, 1, 1]), 3, "binary", 1e-6)
    assert (labels.label_rows, labels.label_agreed, labels.disagrees) == (3, 2, True)
    # a classifier's float labels are labels; a regressor's floats are numbers
    floats = compare(np.array([1.0, 0.0]), np.array([1.0, 0.0]), 2, "binary", 0.0)
    assert (floats.label_agreed, floats.differences.size) == (2, 0)
    numbers = compare(np.array([1.0, 2.0]), np.array([1.0 + 1e-9, 2.5]), 2, "regression", 1e-6)
    assert numbers.within == 1 and numbers.max_difference == pytest.approx(0.5)
    strings = compare(np.array(["a", "b"], dtype=object), ["a", "c"], 2, None, 0.0)
    assert (strings.label_rows, strings.label_agreed) == (2, 1)


def test_named_outputs_rows_of_several_values_nan_and_shapes() -> None:
    live = {"predict": np.array([0, 1]), "predict_proba": np.array([[0.9, 0.1], [0.2, 0.8]])}
    shadow = {"predict": np.array([0, 1]), "predict_proba": np.array([[0.7, 0.3], [0.2, 0.8]])}
    outcome = compare(live, shadow, 2, "binary", 0.01)
    assert (outcome.label_rows, outcome.label_agreed) == (2, 2)
    assert outcome.differences.tolist() == pytest.approx([0.2, 0.0])  # the row's largest
    nan = compare(np.array([np.nan, 1.0]), np.array([np.nan, np.nan]), 2, "regression", 0.0)
    assert nan.differences.tolist() == [0.0, np.inf]
    wrong = compare(np.array([1.0, 2.0]), np.array([1.0]), 2, "regression", 0.0)
    assert wrong.differences.tolist() == [np.inf, np.inf] and wrong.disagrees
    missing = compare({"predict": np.array([1, 2])}, {}, 2, "multiclass", 0.0)
    assert (missing.label_rows, missing.label_agreed) == (2, 0)


def test_worker_states_merge_by_window() -> None:
    def state(mirrored: int, start: str) -> dict[str, object]:
        counts = Counts(mirrored=mirrored, answered=mirrored).to_dict()
        return {"version": "2", "queued": 1, "live_versions": ["1"], "cumulative": counts,
                "windows": [{"start": start, "end": "e", **counts}],
                "samples": [{"request_id": start}]}

    merged = merge_states(state(2, "t0"), [state(3, "t0"), state(4, "t1"), None], samples=2)
    assert merged["cumulative"]["mirrored"] == 9 and merged["queued"] == 3
    assert [(w["start"], w["mirrored"]) for w in merged["windows"]] == [("t0", 5), ("t1", 4)]
    assert len(merged["samples"]) == 2 and merged["parts"] == 3
