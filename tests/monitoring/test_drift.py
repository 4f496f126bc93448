"""PSI, KS and Wasserstein on distributions whose answer is known, and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctcd.monitoring.drift import (
    MISSING,
    UNSEEN,
    Thresholds,
    categorical_drift,
    compare,
    numeric_drift,
    psi,
)
from ctcd.monitoring.reference import categorical_reference, numeric_reference

RNG = np.random.default_rng(7)
THRESHOLDS = Thresholds()


def test_psi_matches_the_formula_and_is_zero_for_equal_shares() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(psi([0.7, 0.3], [0.5, 0.5]))


def test_psi_of_an_empty_bin_is_large_but_finite() -> None:
    value = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    assert math.isfinite(value) and value > 1.0
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_same_normal_distribution_does_not_drift() -> None:
    ref = numeric_reference(RNG.normal(0, 1, 20_000))
    result = numeric_drift("x", ref, RNG.normal(0, 1, 2_000), THRESHOLDS)
    assert not result.drifted
    assert result.psi is not None and result.psi < 0.05
    assert result.ks_pvalue is not None and result.ks_pvalue > 0.01
    assert result.wasserstein is not None and result.wasserstein < 0.1
    assert len(result.bins) == len(result.reference_shares) == len(result.current_shares)
    assert sum(result.current_shares) == pytest.approx(1.0)


def test_a_shift_of_one_standard_deviation_drifts_on_every_measure() -> None:
    ref = numeric_reference(RNG.normal(0, 1, 20_000))
    result = numeric_drift("x", ref, RNG.normal(1, 1, 2_000), THRESHOLDS)
    assert result.drifted
    assert result.psi is not None and result.psi > 0.5
    assert result.ks_statistic == pytest.approx(0.38, abs=0.05)  # 2*Phi(0.5)-1
    assert result.ks_pvalue is not None and result.ks_pvalue < 1e-10
    assert result.wasserstein == pytest.approx(1.0, abs=0.1)  # in reference std units


def test_ks_alone_flags_a_change_of_spread_that_keeps_the_bins_balanced() -> None:
    ref = numeric_reference(RNG.uniform(0, 1, 20_000))
    # Same median, much narrower: most mass moves into the middle deciles.
    result = numeric_drift("x", ref, RNG.uniform(0.3, 0.7, 3_000), THRESHOLDS)
    assert result.drifted and result.ks_statistic is not None and result.ks_statistic > 0.25


def test_values_outside_the_training_range_fall_in_the_outer_bins() -> None:
    ref = numeric_reference(np.arange(100.0))
    result = numeric_drift("x", ref, np.full(500, 1000.0), THRESHOLDS)
    assert result.bins[-2].startswith(">") and result.current_shares[-2] == 1.0
    assert result.drifted


def test_a_constant_reference_column_detects_any_other_value() -> None:
    ref = numeric_reference(np.full(1_000, 3.0))
    assert ref["edges"] == [3.0] and ref["shares"] == [1.0, 0.0] and ref["std"] == 0.0
    same = numeric_drift("x", ref, np.full(600, 3.0), THRESHOLDS)
    assert not same.drifted and same.psi == 0.0 and same.wasserstein == 0.0
    moved = numeric_drift("x", ref, np.full(600, 4.0), THRESHOLDS)
    assert moved.drifted and moved.wasserstein == pytest.approx(1.0)  # raw: std is 0


def test_nulls_count_in_their_own_bucket() -> None:
    ref = numeric_reference(RNG.normal(0, 1, 5_000))
    values = RNG.normal(0, 1, 1_000)
    values[:400] = np.nan
    result = numeric_drift("x", ref, values, THRESHOLDS)
    assert result.bins[-1] == MISSING and result.current_shares[-1] == pytest.approx(0.4)
    assert result.null_share == pytest.approx(0.4) and result.drifted


def test_no_served_values_gives_no_verdict() -> None:
    ref = numeric_reference(RNG.normal(0, 1, 100))
    result = numeric_drift("x", ref, np.array([]), THRESHOLDS)
    assert result.psi is None and not result.drifted and result.count == 0


def test_categorical_shift_and_stability() -> None:
    ref = categorical_reference(RNG.choice(["a", "b", "c"], 10_000, p=[0.5, 0.3, 0.2]),
                                ["a", "b", "c"])
    same = categorical_drift("c", ref, RNG.choice(["a", "b", "c"], 2_000, p=[0.5, 0.3, 0.2]),
                             THRESHOLDS)
    assert not same.drifted and same.psi is not None and same.psi < 0.02
    moved = categorical_drift("c", ref, RNG.choice(["a", "b", "c"], 2_000, p=[0.8, 0.15, 0.05]),
                              THRESHOLDS)
    assert moved.drifted and moved.psi is not None and moved.psi > 0.3


def test_unseen_categories_are_their_own_bucket_and_drift() -> None:
    ref = categorical_reference(["a", "b"] * 500, ["a", "b", "never"])
    assert ref["shares"]["never"] == 0.0  # spec categories absent from training still listed
    values = ["a", "b"] * 400 + ["z"] * 200
    result = categorical_drift("c", ref, values, THRESHOLDS)
    assert result.bins[-2:] == (UNSEEN, MISSING)
    assert result.unseen_share == pytest.approx(0.2) and result.drifted


def test_compare_needs_a_share_of_features_or_the_predictions_to_drift() -> None:
    n = 5_000
    train = pd.DataFrame({"a": RNG.normal(0, 1, n), "b": RNG.normal(0, 1, n),
                          "c": RNG.choice(["x", "y"], n)})
    reference = {
        "features": {"a": numeric_reference(train["a"]), "b": numeric_reference(train["b"]),
                     "c": categorical_reference(train["c"], ["x", "y"])},
        "predictions": categorical_reference(RNG.choice([0, 1], n)),
    }
    served = pd.DataFrame({"a": RNG.normal(2, 1, 1_000), "b": RNG.normal(0, 1, 1_000),
                           "c": RNG.choice(["x", "y"], 1_000)})
    stable_predictions = RNG.choice([0, 1], 1_000).tolist()
    one_of_three = compare(reference, served, stable_predictions, Thresholds(drifted_share=0.5))
    assert [f.name for f in one_of_three.drifted_features] == ["a"]
    assert not one_of_three.drift and one_of_three.reasons == ()
    lower = compare(reference, served, stable_predictions, Thresholds(drifted_share=0.3))
    assert lower.drift and "1 of 3 features drifted" in lower.reasons[0]
    skewed = compare(reference, served.assign(a=RNG.normal(0, 1, 1_000)), [1] * 1_000,
                     Thresholds(drifted_share=0.5))
    assert skewed.drift and skewed.prediction is not None and skewed.prediction.drifted
    assert "prediction distribution drifted" in skewed.reasons[0]


def test_a_feature_missing_from_served_rows_is_all_nulls() -> None:
    reference = {"features": {"a": numeric_reference(RNG.normal(0, 1, 1_000))}}
    result = compare(reference, pd.DataFrame({"other": [1.0] * 100}), None)
    assert result.features[0].null_share == 1.0 and result.drift


def test_text_in_a_numeric_column_counts_as_missing() -> None:
    reference = {"features": {"a": numeric_reference(RNG.normal(0, 1, 1_000))}}
    served = pd.DataFrame({"a": pd.Series([0.1, "n/a", None, "0.5"] * 50, dtype=object)})
    (feature,) = compare(reference, served, None).features
    assert feature.null_share == pytest.approx(0.5) and feature.count == 200
