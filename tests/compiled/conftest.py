"""Models of every type the project trains, fitted and logged as training logs them: the
three shipped model files (churn: the spec's preprocessing + HistGradientBoosting; wine: a
bare XGBClassifier; diabetes: the user trainer's LGBMRegressor) and the serving benchmark's
models (a 100-tree RandomForest on 20 numeric features, an XGBClassifier, an
LGBMRegressor), each with holdout rows it was not trained on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import pytest

SHIPPED = ("churn", "wine", "diabetes")
BENCH = ("bench-random_forest", "bench-xgboost", "bench-lightgbm")


@dataclass(frozen=True)
class Trained:
    kind: str
    uri: str  # models:/m-... (the logged model)
    holdout: pd.DataFrame  # feature rows it was not trained on
    task: str


def _shipped(kind: str) -> tuple[Any, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    from ctcd.data.churn import generate_snapshot
    from ctcd.data.examples import generate
    from ctcd.data.spec import load_spec
    from ctcd.models import load_model
    from ctcd.training.train import model_metadata
    from ctcd.training.trainers import fit

    definition = load_model(kind)
    spec = load_spec(definition.dataset)
    if kind == "churn":
        train, holdout = generate_snapshot(date(2026, 1, 1), rows=3000), \
            generate_snapshot(date(2026, 1, 2), rows=1500)
    else:
        train, holdout = generate(spec, date(2026, 1, 1), 1500), \
            generate(spec, date(2026, 1, 2), 800)
    estimator = definition.trainer.estimator or "hist_gradient_boosting"
    fitted = fit(definition, spec, train, estimator=estimator,
                 hyperparameters=dict(definition.trainer.hyperparameters), seed=0)
    features = list(spec.feature_names)
    return fitted.model, train[features], holdout[features], model_metadata(definition, spec)


def _bench(kind: str) -> tuple[Any, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    import lightgbm as lgb
    import numpy as np
    import xgboost as xgb
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=4000, n_features=20, n_informative=8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    train, holdout = frame.iloc[:3000], frame.iloc[3000:]
    if kind == "bench-random_forest":
        model = RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0,
                                       n_jobs=1).fit(train, y[:3000])
        return model, train, holdout, {"task": "binary", "classes": [0, 1]}
    if kind == "bench-xgboost":
        model = xgb.XGBClassifier(n_estimators=100, max_depth=6, random_state=0,
                                  n_jobs=1).fit(train, y[:3000])
        return model, train, holdout, {"task": "binary", "classes": [0, 1]}
    target = x[:, :8] @ np.linspace(1.0, 2.0, 8)
    model = lgb.LGBMRegressor(n_estimators=100, num_leaves=31, random_state=0, verbose=-1,
                              n_jobs=1).fit(train, target[:3000])
    return model, train, holdout, {"task": "regression"}


@pytest.fixture(scope="session")
def trained(mlflow_server: str) -> dict[str, Trained]:
    """Every model type, logged (not registered) on the session's MLflow server."""
    import mlflow

    from ctcd.training.flavors import log_fitted

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-compiled-tests")
    models: dict[str, Trained] = {}
    for kind in (*SHIPPED, *BENCH):
        model, train, holdout, metadata = _shipped(kind) if kind in SHIPPED else _bench(kind)
        with mlflow.start_run(run_name=f"compiled-{kind}"):
            info = log_fitted(model, train.head(5), metadata=metadata)
        models[kind] = Trained(kind, info.model_uri, holdout.reset_index(drop=True),
                               str(metadata["task"]))
    return models
