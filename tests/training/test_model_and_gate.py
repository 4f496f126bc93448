from __future__ import annotations

from datetime import date

import pytest

from ctcd.data.churn import churn_spec, generate_snapshot
from ctcd.data.snapshots import split
from ctcd.training.evaluate import Comparison, score
from ctcd.training.gate import decide
from ctcd.training.model import build_pipeline


@pytest.mark.parametrize(
    "model_type", ["logistic_regression", "hist_gradient_boosting", "random_forest"]
)
def test_pipelines_learn_the_churn_signal(model_type: str) -> None:
    spec = churn_spec()
    frame = generate_snapshot(date(2026, 4, 1), rows=6_000)
    train, holdout = split(frame, 0.25, spec.id_column)
    hyper = {"n_estimators": 30, "max_depth": 8} if model_type == "random_forest" else {}
    model = build_pipeline(
        model_type, hyper, numeric=spec.numeric_features, categorical=spec.categorical_features
    ).fit(train[list(spec.feature_names)], train[spec.label.name])
    metrics = score(model, holdout, spec)
    assert metrics["roc_auc"] > 0.75, metrics
    assert 0 < metrics["f1"] <= 1 and 0.5 < metrics["accuracy"] <= 1


def test_unknown_model_type_and_hyperparameter_are_named() -> None:
    with pytest.raises(ValueError, match="model_type"):
        build_pipeline("xgboost", {})
    with pytest.raises(ValueError, match="max_dept"):
        build_pipeline("random_forest", {"max_dept": 3})


def _cmp(candidate: float, champion: float | None) -> Comparison:
    return Comparison(
        candidate={"roc_auc": candidate},
        champion=None if champion is None else {"roc_auc": champion},
        champion_version=None if champion is None else "4",
    )


@pytest.mark.parametrize(
    ("candidate", "champion", "improvement", "deploy", "says"),
    [
        (0.70, None, 0.0, False, "below the threshold"),
        (0.80, None, 0.0, True, "no champion"),
        (0.80, 0.82, 0.0, False, "does not beat champion v4"),
        (0.83, 0.82, 0.0, True, "beats champion v4"),
        (0.83, 0.82, 0.02, False, "does not beat"),
    ],
)
def test_deployment_trigger(candidate, champion, improvement, deploy, says) -> None:
    decision = decide(
        _cmp(candidate, champion), metric="roc_auc", threshold=0.75, min_improvement=improvement
    )
    assert decision.deploy is deploy
    assert says in decision.reason
