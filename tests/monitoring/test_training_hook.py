"""Training logs the reference statistics with the model (real MLflow server)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import mlflow
import pytest

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec
from ctcd.monitoring.reference import ARTIFACT_PATH, ReferenceNotFound, load_reference
from ctcd.tracking import Tracking
from ctcd.training.train import train

pytestmark = pytest.mark.e2e


def test_a_trained_model_carries_its_reference(tmp_path: Path, mlflow_server: str) -> None:
    snapshot = tmp_path / "snapshot_date=2026-05-01" / "data.parquet"
    snapshot.parent.mkdir()
    generate_snapshot(date(2026, 5, 1), rows=2_000).to_parquet(snapshot)
    tracking = Tracking(mlflow_server)

    result = train(tracking, snapshot, load_spec("churn"), experiment="ctcd-monitoring-tests",
                   model_type="logistic_regression", hyperparameters={"max_iter": 300},
                   holdout_fraction=0.2)

    client = tracking.client
    assert ARTIFACT_PATH in {a.path for a in client.list_artifacts(result.run_id, "reference")}
    reference = load_reference(result.run_id, client=client)
    assert list(reference["features"]) == list(load_spec("churn").feature_names)
    params = client.get_run(result.run_id).data.params
    assert reference["rows"] == int(params["train_rows"])  # the training split
    assert reference["predictions"]["count"] == int(params["holdout_rows"])  # on the holdout
    assert reference["predictions"]["holdout_accuracy"] == pytest.approx(
        result.metrics["holdout_accuracy"])


def test_a_run_without_reference_is_named_with_what_to_do(mlflow_server: str) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-monitoring-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("x", 1)
    with pytest.raises(ReferenceNotFound, match="Retrain it with continuous_training"):
        load_reference(run.info.run_id, client=mlflow.MlflowClient())
