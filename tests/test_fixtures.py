"""The shared fixtures themselves: a real MLflow server that registers and serves models back."""

from __future__ import annotations

import mlflow
import pandas as pd


def test_churn_model_is_registered_and_loads_back(churn_model) -> None:
    model = mlflow.pyfunc.load_model(churn_model.uri)
    predictions = model.predict(churn_model.example)
    assert len(predictions) == len(churn_model.example)
    assert set(pd.unique(predictions)) <= {0, 1}
    client = mlflow.MlflowClient()
    version = client.get_model_version(churn_model.name, churn_model.version)
    assert version.run_id == churn_model.run_id


def test_model_factory_makes_new_versions(model_factory) -> None:
    first = model_factory(name="churn-versions", kind="logistic_regression")
    second = model_factory(name="churn-versions", kind="logistic_regression")
    assert int(second.version) == int(first.version) + 1
