"""Training logs the reference statistics with the model (real MLflow server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
from tests.conftest import ModelFiles

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.monitoring.reference import ARTIFACT_PATH, ReferenceNotFound, load_reference
from ctcd.pipelines import continuous_training as pipeline
from ctcd.tracking import Tracking

pytestmark = pytest.mark.e2e


def test_a_trained_model_carries_its_reference(tmp_path: Path, mlflow_server: str,
                                               ctcd_home: Path, model_files: ModelFiles) -> None:
    model = model_files.write("churn")
    uri = f"file://{tmp_path}/landing/"
    produce(datetime.now(UTC).date(), 2_000, spec=load_spec("churn"), landing_uri=uri)
    tracking = Tracking(mlflow_server)
    conf = {"landing_uri": uri}
    ingested = pipeline.ingest(model, conf, tracking)
    candidate = pipeline.train(model, ingested, pipeline.validate(ingested, tracking), conf,
                               {"dag_id": "test"}, tracking)
    evaluation = pipeline.evaluate(model, candidate, ingested, conf, tracking)

    client = tracking.client
    run_id = candidate["run_id"]
    assert ARTIFACT_PATH in {a.path for a in client.list_artifacts(run_id, "reference")}
    reference = load_reference(run_id, client=client)
    assert list(reference["features"]) == list(load_spec("churn").feature_names)
    params = client.get_run(run_id).data.params
    assert reference["rows"] == int(params["train_rows"])  # the training split
    assert reference["predictions"]["count"] == int(params["holdout_rows"])  # on the holdout
    # The same holdout accuracy as MLflow's own evaluation computed on those rows.
    assert reference["predictions"]["holdout_accuracy"] == pytest.approx(
        evaluation["candidate"]["accuracy"])
    assert reference["predictions"]["holdout_metric"] == {
        "name": "accuracy", "value": pytest.approx(evaluation["candidate"]["accuracy"])}


def test_a_run_without_reference_is_named_with_what_to_do(mlflow_server: str) -> None:
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-monitoring-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("x", 1)
    with pytest.raises(ReferenceNotFound, match="Retrain it with its training DAG"):
        load_reference(run.info.run_id, client=mlflow.MlflowClient())
