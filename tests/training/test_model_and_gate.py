from __future__ import annotations

from datetime import date

import pytest
from sklearn.metrics import roc_auc_score

from ctcd.data.churn import churn_spec, generate_snapshot
from ctcd.data.snapshots import split
from ctcd.models.tasks import METRICS, metric
from ctcd.training.evaluate import Comparison
from ctcd.training.gate import decide
from ctcd.training.model import build_pipeline, estimator_class, make_estimator


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting",
                                       "random_forest", "ridge"])
def test_pipelines_learn_the_churn_signal(estimator: str) -> None:
    spec = churn_spec()
    frame = generate_snapshot(date(2026, 4, 1), rows=6_000)
    train, holdout = split(frame, 0.25, spec.id_column)
    hyper = {"n_estimators": 30, "max_depth": 8} if estimator == "random_forest" else {}
    model = build_pipeline(
        estimator, hyper, numeric=spec.numeric_features, categorical=spec.categorical_features
    ).fit(train[list(spec.feature_names)], train[spec.label.name])
    features = holdout[list(spec.feature_names)]
    scores = (model.decision_function(features) if estimator == "ridge"
              else model.predict_proba(features)[:, 1])
    assert roc_auc_score(holdout[spec.label.name], scores) > 0.75


def test_shortcuts_follow_the_task_and_dotted_paths_import() -> None:
    assert estimator_class("random_forest", "regression").__name__ == "RandomForestRegressor"
    assert estimator_class("ridge", "multiclass").__name__ == "RidgeClassifier"
    assert estimator_class("sklearn.svm.SVR", "regression").__name__ == "SVR"
    assert estimator_class("xgboost.XGBClassifier").__name__ == "XGBClassifier"
    with pytest.raises(ValueError, match="classifier only"):
        estimator_class("logistic_regression", "regression")
    with pytest.raises(ValueError, match="cannot import 'nowhere'"):
        estimator_class("nowhere.Model")
    with pytest.raises(ValueError, match="no estimator class 'Nope'"):
        estimator_class("sklearn.linear_model.Nope")


def test_unknown_estimator_and_hyperparameter_are_named() -> None:
    with pytest.raises(ValueError, match="unknown estimator 'xgboost'"):
        build_pipeline("xgboost", {})
    with pytest.raises(ValueError, match="max_dept"):
        build_pipeline("random_forest", {"max_dept": 3})
    with pytest.raises(ValueError, match="max_iter"):
        make_estimator("hist_gradient_boosting", {"max_iter": -1})


def test_the_seed_is_the_estimators_random_state_unless_given() -> None:
    assert make_estimator("random_forest", {}, seed=7).random_state == 7
    assert make_estimator("random_forest", {"random_state": 3}, seed=7).random_state == 3
    assert make_estimator("xgboost.XGBRegressor", {}, task="regression", seed=5).random_state == 5


def test_tree_libraries_on_numeric_features_are_fitted_bare() -> None:
    bare = build_pipeline("xgboost.XGBClassifier", {"n_estimators": 5}, numeric=("a", "b"),
                          categorical=())
    assert type(bare).__name__ == "XGBClassifier"
    wrapped = build_pipeline("xgboost.XGBClassifier", {"n_estimators": 5}, numeric=("a",),
                             categorical=("c",))
    assert type(wrapped).__name__ == "Pipeline"


def _cmp(candidate: float, champion: float | None, name: str = "roc_auc") -> Comparison:
    return Comparison(
        candidate={name: candidate},
        champion=None if champion is None else {name: champion},
        champion_version=None if champion is None else "4",
    )


@pytest.mark.parametrize(
    ("candidate", "champion", "improvement", "deploy", "says"),
    [
        (0.70, None, 0.0, False, "does not pass the threshold (at least 0.75)"),
        (0.80, None, 0.0, True, "no champion"),
        (0.80, 0.82, 0.0, False, "does not beat champion v4"),
        (0.82, 0.82, 0.0, True, "beats champion v4"),
        (0.83, 0.82, 0.0, True, "beats champion v4"),
        (0.83, 0.82, 0.02, False, "does not beat champion v4 (0.8200) by 0.02"),
    ],
)
def test_deployment_trigger(candidate, champion, improvement, deploy, says) -> None:
    decision = decide(_cmp(candidate, champion), metric=metric("binary", "roc_auc"),
                      threshold=0.75, min_improvement=improvement)
    assert decision.deploy is deploy
    assert says in decision.reason


@pytest.mark.parametrize(
    ("candidate", "champion", "deploy", "says"),
    [
        (80.0, None, False, "does not pass the threshold (at most 70"),
        (60.0, None, True, "no champion"),
        (60.0, 55.0, False, "does not beat champion v4"),
        (50.0, 55.0, True, "beats champion v4"),
    ],
)
def test_an_error_metric_is_better_lower(candidate, champion, deploy, says) -> None:
    decision = decide(_cmp(candidate, champion, "rmse"), metric=metric("regression", "rmse"),
                      threshold=70.0)
    assert decision.deploy is deploy
    assert says in decision.reason


def test_a_metric_the_candidate_lacks_does_not_deploy() -> None:
    decision = decide(Comparison({"f1": 0.9}, None, None), metric=metric("binary", "roc_auc"),
                      threshold=None)
    assert not decision.deploy and "has no roc_auc" in decision.reason


def test_every_task_has_its_metrics() -> None:
    assert set(METRICS) == {"binary", "multiclass", "regression"}
    assert {m.name for m in METRICS["regression"].values()} == {"rmse", "mae", "r2", "mape"}
    with pytest.raises(ValueError, match="choose one of f1_macro, accuracy, log_loss"):
        metric("multiclass", "roc_auc")
