"""A served churn model for the monitoring end-to-end tests.

Trained and logged like continuous_training's ``train`` step does (the model, then the
reference statistics through the training hook), registered as ``champion``, deployed by
the real local deployer (which hands the stack environment, request-log sampling included,
to the ``python -m ctcd.serving`` process it starts) and sent rows over HTTP, alternately
as MLflow ``dataframe_split`` and KServe V2 requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import mlflow
import pandas as pd
from tests.serving.v2_inputs import v2_columns

from ctcd.data.churn import generate_snapshot
from ctcd.data.snapshots import split
from ctcd.data.spec import load_spec
from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.monitoring.reference import log_training_reference
from ctcd.monitoring.served import read_window
from ctcd.settings import Settings
from ctcd.training.model import build_pipeline, log_model

TRAINING_DAY = date(2026, 1, 1)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    run_id: str
    endpoint: str
    log_path: Path


def train_champion(name: str) -> tuple[str, str]:
    """Train, log (model + reference), register and alias ``champion``: (version, run id)."""
    spec = load_spec("churn")
    features = list(spec.feature_names)
    train_set, holdout = split(generate_snapshot(TRAINING_DAY, rows=5_000), 0.2, spec.id_column)
    pipeline = build_pipeline("logistic_regression", {"max_iter": 300},
                              numeric=spec.numeric_features,
                              categorical=spec.categorical_features)
    pipeline.fit(train_set[features], train_set[spec.label.name])
    mlflow.set_experiment("ctcd-monitoring-tests")
    with mlflow.start_run() as run:
        info = log_model(pipeline, train_set[features].head(5), registered_model_name=name)
        log_training_reference(run.info.run_id, pipeline, train_set, holdout, spec)
    version = str(info.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
    return version, run.info.run_id


@contextmanager
def served_model(name: str, home: Path) -> Iterator[ServedModel]:
    """A trained champion served by a real model server whose request log is on."""
    version, run_id = train_champion(name)
    deployer = LocalDeployer(Settings(home=home))
    handle = deployer.deploy_model(
        DeploymentConfig(model_name=name, model_uri=f"models:/{name}/{version}",
                         model_version=version, mlflow_run_id=run_id),
        strategy="replace", timeout=300,
    )
    try:
        yield ServedModel(name, version, run_id, handle.endpoint,
                          home / "serving" / "requests.sqlite")
    finally:
        for server in deployer.find_model_server():
            deployer.delete_model_server(server.service_id, timeout=30, force=True)


def traffic(day: date, rows: int, drift: float) -> pd.DataFrame:
    """Feature rows of a day as the producer's generator makes them (with the label)."""
    return generate_snapshot(day, rows=rows, drift=drift)


def send(model: ServedModel, frame: pd.DataFrame, rows_per_request: int = 50) -> None:
    features = list(load_spec("churn").feature_names)
    with httpx.Client(base_url=model.endpoint, timeout=60) as client:
        for i, start in enumerate(range(0, len(frame), rows_per_request)):
            chunk = frame[features].iloc[start:start + rows_per_request]
            if i % 2 == 0:
                response = client.post(
                    "/invocations", headers={"Content-Type": "application/json"},
                    content='{"dataframe_split": ' + chunk.to_json(orient="split",
                                                                   index=False) + "}")
            else:
                response = client.post(f"/v2/models/{model.name}/infer",
                                       json={"inputs": v2_columns(chunk)})
            assert response.status_code == 200, response.text


def wait_logged(model: ServedModel, after_rowid: int, rows: int, timeout: float = 60) -> None:
    """Until the server's background writer has logged ``rows`` rows after ``after_rowid``."""
    features = load_spec("churn").feature_names
    deadline = time.monotonic() + timeout
    while True:
        logged = read_window(model.log_path, model.name, model.version, features,
                             after_rowid=after_rowid, max_rows=10**9).rows
        if logged >= rows:
            return
        assert time.monotonic() < deadline, f"only {logged} of {rows} rows logged"
        time.sleep(0.2)

