"""The ``xgboost`` flavor: scikit-learn API models and Boosters of every task, served
natively with the answers of MLflow's own loader, with and without the project's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from tests.flavored_models import FlavoredFactory
from tests.serving.flavors.conftest import answers, assert_served_natively

from ctcd.serving.flavors import Source
from ctcd.serving.flavors.xgboost import load as load_xgboost
from ctcd.serving.schema import InputSchema

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["xgboost-binary", "xgboost-binary-bare", "xgboost-multiclass",
                                  "xgboost-regression", "xgboost-booster", "xgboost-numeric"])
def test_served_natively_with_mlflows_answers(kind: str, flavored_model: FlavoredFactory,
                                              served: Any) -> None:
    assert_served_natively(served(flavored_model(kind)), flavored_model(kind))


def test_regression_answers_floats_and_a_booster_its_probabilities(
    flavored_model: FlavoredFactory, served: Any
) -> None:
    regression = served(flavored_model("xgboost-regression"))
    assert regression.predict_dtype == np.float32
    booster_model = flavored_model("xgboost-booster")
    booster = served(booster_model)
    got = answers(booster, booster_model)
    assert got["predict"].shape == (len(booster_model.frame), 3)  # multi:softprob
    assert booster.predict_shape == (-1, 3)
    np.testing.assert_allclose(got["predict"].sum(axis=1), 1.0, rtol=1e-5)


def test_an_unseen_category_is_missing_as_in_training(flavored_model: FlavoredFactory,
                                                      served: Any) -> None:
    model = flavored_model("xgboost-binary")
    loaded = served(model)
    rows = model.frame.head(6).copy()
    rows["color"] = ["red", "purple", "green", "", "blue", "purple"]
    typed = rows.astype({"color": pd.CategoricalDtype(model.categories["color"])})
    assert typed["color"].isna().sum() == 3
    expected = model.raw().predict_proba(typed)
    got = loaded.predict(rows, outputs=("predict_proba",))["predict_proba"]
    assert np.array_equal(got, expected)


def test_a_signature_with_params_goes_through_pyfunc(flavored_model: FlavoredFactory) -> None:
    """MLflow passes declared params to XGBoost's predict: only its pyfunc does that."""
    model = flavored_model("xgboost-numeric")
    local = mlflow.artifacts.download_artifacts(artifact_uri=model.uri)
    meta = yaml.safe_load((Path(local) / "MLmodel").read_text())
    schema = InputSchema.from_signature_json(meta["signature"]["inputs"])
    assert schema is not None
    source = Source(model.uri, Path(local), meta, meta["flavors"]["xgboost"], schema)
    assert load_xgboost(source) is not None
    meta["signature"]["params"] = '[{"name": "iteration_range", "type": "long", "default": 1}]'
    assert load_xgboost(Source(model.uri, Path(local), meta, meta["flavors"]["xgboost"],
                               schema)) is None
