"""The answers ``verify`` holds an endpoint to, for every flavor the server serves natively,
on models registered on the tests' MLflow server as training logs them: equal to MLflow's
own flavor loader and the library's predict on the frame typed as trained
(tests/flavored_models.py), including XGBoost and LightGBM models with a category column,
which MLflow's pyfunc cannot score at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ctcd.pipelines import oracle

CATEGORY_KINDS = ["xgboost-binary", "xgboost-binary-bare", "xgboost-multiclass",
                  "xgboost-regression", "xgboost-booster", "lightgbm-binary",
                  "lightgbm-multiclass", "lightgbm-regression", "lightgbm-regression-bare"]
OTHER_KINDS = ["xgboost-numeric", "lightgbm-booster", "lightgbm-numeric",
               "sklearn-regression", "sklearn-multiclass"]


@pytest.mark.parametrize("kind", CATEGORY_KINDS + OTHER_KINDS)
def test_the_answers_are_the_models_own(flavored_model: Any, kind: str) -> None:
    model = flavored_model(kind)
    frame = model.frame.head(200)
    got = oracle.expected(model.uri, frame)
    want = model.expected(frame)
    assert got.shape == want.shape
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    else:
        assert (got == want).all()


@pytest.mark.parametrize("kind", ["xgboost-binary", "lightgbm-regression-bare"])
def test_pyfunc_cannot_score_a_category_column_which_is_why(flavored_model: Any,
                                                            kind: str) -> None:
    import mlflow

    model = flavored_model(kind)
    with pytest.raises(Exception):  # noqa: B017 - MLflow's or the library's, as it happens
        mlflow.pyfunc.load_model(model.uri).predict(model.frame.head(5))


def test_an_unseen_category_is_answered_as_the_model_answers_it(flavored_model: Any) -> None:
    model = flavored_model("xgboost-binary")
    frame = model.frame.head(20).copy()
    frame["color"] = "purple"  # not among the categories it was trained on: missing
    np.testing.assert_array_equal(oracle.expected(model.uri, frame), model.expected(frame))
