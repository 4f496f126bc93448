"""The training steps outside Airflow, on landed partitions and a real MLflow: ingest (the
window, the watermark), train, evaluate (MLflow's evaluation, the champion on the same
rows), the gate, register and promote; for each task."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import numpy as np
import pytest
from tests.conftest import ModelFiles
from tests.pipelines.landing import TODAY, Landing, Run

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.errors import InvalidParams
from ctcd.models import ModelDefinition
from ctcd.pipelines import continuous_training as pipeline
from ctcd.tracking import Tracking

LINEAGE = {"dag_id": "churn_training", "run_id": "manual__test", "task_id": "train"}


def test_ingest_checks_params_and_the_trainer_first(churn: ModelDefinition,
                                                    tracking: Tracking) -> None:
    with pytest.raises(InvalidParams, match="unknown parameter 'min_roc_auc'"):
        pipeline.ingest(churn, {"min_roc_auc": 0.9}, tracking)
    with pytest.raises(InvalidParams, match="bogus"):
        pipeline.ingest(churn, {"hyperparameters": {"bogus": 1}}, tracking)


def test_ingest_takes_the_newest_partition_or_the_one_asked_for(
    landing: Landing, run: Run
) -> None:
    yesterday = TODAY - timedelta(days=1)
    landing.parquet(landing.frame(day=yesterday, rows=1_500), day=yesterday)
    landing.parquet(landing.frame(rows=1_200))
    assert run()[0]["day"] == TODAY.isoformat()
    ingested, _ = run(snapshot_date=yesterday.isoformat())
    assert ingested["day"] == yesterday.isoformat() and ingested["rows"] == 1_500
    with pytest.raises(Exception, match="is not in"):
        run(snapshot_date="2020-01-01")


def test_a_window_of_partitions_is_ingested_and_validated(landing: Landing, run: Run) -> None:
    for back in (4, 2, 1, 0):
        day = TODAY - timedelta(days=back)
        landing.parquet(landing.frame(day=day, rows=1_000 + back), day=day)
    ingested, validation = run(window_partitions=3)
    days = [(TODAY - timedelta(days=b)).isoformat() for b in (2, 1, 0)]
    assert ingested["days"] == days and ingested["rows"] == 1_002 + 1_001 + 1_000
    assert [p["day"] for p in validation["partitions"]] == days
    by_days, _ = run(window_days=3, window_partitions=None)
    assert by_days["days"] == days  # 4 days back is outside a 3-day window


def test_train_evaluate_gate_register_promote_then_skip(
    landing: Landing, tracking: Tracking, run: Run, churn: ModelDefinition
) -> None:
    landing.parquet(landing.frame(rows=4_000))
    conf = {"landing_uri": landing.uri}
    ingested, validation = run()
    candidate = pipeline.train(churn, ingested, validation, conf, LINEAGE, tracking)
    assert candidate["flavor"] == "sklearn"

    trained = tracking.client.get_run(candidate["run_id"])
    assert trained.data.params["trainer"] == "logistic_regression"
    assert trained.data.params["task"] == "binary" and trained.data.params["seed"] == "0"
    assert trained.data.tags["airflow.dag_id"] == "churn_training"
    assert trained.data.tags["ctcd.partition"] == TODAY.isoformat()
    assert trained.data.tags["ctcd.model"] == churn.model_name
    assert trained.data.tags["ctcd.validation"] == "passed"
    assert [d.dataset.name for d in trained.inputs.dataset_inputs] == [f"churn/date={TODAY}"]
    # The validation of the data goes with the model: its JSON result and Data Docs page.
    logged = {a.path for a in tracking.client.list_artifacts(candidate["run_id"], "validation")}
    assert any(p.endswith(".json") for p in logged) and "validation/data_docs" in logged
    with tracking.active():
        info = mlflow.models.get_model_info(candidate["model_uri"])
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.metadata["ctcd"]["task"] == "binary"

    evaluation = pipeline.evaluate(churn, candidate, ingested, conf, tracking)
    assert evaluation["champion"] is None and evaluation["metric"] == "roc_auc"
    assert evaluation["candidate"]["roc_auc"] > 0.75
    # MLflow's evaluation logged its metrics and plots to the training run.
    evaluated = tracking.client.get_run(candidate["run_id"])
    assert evaluated.data.metrics["holdout_roc_auc"] == pytest.approx(
        evaluation["candidate"]["roc_auc"])
    plots = {a.path for a in tracking.client.list_artifacts(candidate["run_id"])}
    assert any("confusion_matrix" in p for p in plots), plots
    assert pipeline.deployment_trigger(churn, evaluation, conf)["deploy"] is True

    registered = pipeline.register(churn, candidate, LINEAGE, tracking, decision="passes")
    assert registered["version"] == "1" and registered["model_name"] == churn.model_name
    # compiled at registration, verified on the holdout rows the training run kept
    # (used when it was measured faster at 1 row and at all rows: a busy machine decides)
    assert registered["compiled"] in ("verified", "slower")
    version_tags = tracking.client.get_model_version(churn.model_name, "1").tags
    assert version_tags["ctcd.compiled"] == registered["compiled"]
    assert "equal on" in version_tags["ctcd.compiled.reason"]
    holdout = tracking.client.list_artifacts(candidate["run_id"], "verification")
    assert [a.path for a in holdout] == ["verification/holdout.parquet"]
    assert pipeline.register(churn, candidate, LINEAGE, tracking)["version"] == "1"  # a retry
    assert tracking.alias_version(churn.model_name, "challenger") == "1"
    pipeline.promote(registered, tracking)
    assert tracking.champion_version(churn.model_name) == "1"
    assert tracking.alias_version(churn.model_name, "challenger") is None

    # The partition is now trained on: the next run has nothing new to do...
    with pytest.raises(pipeline.NothingNew, match="trained on already"):
        run()
    # ...unless forced; and a forced candidate is compared with the champion on the same rows.
    ingested, validation = run(force=True)
    weaker = {**conf, "hyperparameters": {"C": 1e-5, "max_iter": 50}}
    candidate2 = pipeline.train(churn, ingested, validation, weaker, LINEAGE, tracking)
    evaluation2 = pipeline.evaluate(churn, candidate2, ingested, weaker, tracking)
    assert evaluation2["champion_version"] == "1"
    assert evaluation2["champion"]["roc_auc"] == pytest.approx(evaluation["candidate"]["roc_auc"])
    decision = pipeline.deployment_trigger(churn, evaluation2, {**weaker, "threshold": 0.5})
    assert decision["deploy"] is False and "does not beat champion v1" in decision["reason"]
    assert tracking.client.get_run(candidate2["run_id"]).data.tags["champion_version"] == "1"


def test_two_runs_on_one_partition_give_the_same_model(
    landing: Landing, tracking: Tracking, model_files: ModelFiles
) -> None:
    model = model_files.write("forest", trainer={"estimator": "random_forest",
                                                 "hyperparameters": {"n_estimators": 20}},
                              training={"seed": 11})
    landing.parquet(landing.frame(rows=3_000))
    conf = {"landing_uri": landing.uri, "force": True}
    uris = []
    for _ in range(2):
        ingested = pipeline.ingest(model, conf, tracking)
        validation = pipeline.validate(ingested, tracking)
        uris.append(pipeline.train(model, ingested, validation, conf, LINEAGE, tracking))
    assert tracking.client.get_run(uris[0]["run_id"]).data.params["seed"] == "11"
    rows = landing.frame(rows=500)[list(load_spec("churn").feature_names)]
    with tracking.active():
        first, second = (mlflow.pyfunc.load_model(u["model_uri"]).predict(rows) for u in uris)
    assert np.array_equal(first, second)


@pytest.mark.parametrize("key", ["wine", "diabetes"])
def test_multiclass_and_regression_examples_train_and_evaluate(
    tmp_path, ctcd_home, tracking: Tracking, model_files: ModelFiles, key: str
) -> None:
    model = model_files.example(key)
    spec = load_spec(model.dataset)
    uri = f"file://{tmp_path}/landing/{key}/"
    for back in (2, 1, 0):
        produce(TODAY - timedelta(days=back), 1_500, spec=spec, landing_uri=uri)
    conf = {"landing_uri": uri}
    ingested = pipeline.ingest(model, conf, tracking)
    assert len(ingested["days"]) == model.training.window.partitions
    validation = pipeline.validate(ingested, tracking)
    candidate = pipeline.train(model, ingested, validation, conf, LINEAGE, tracking)
    assert candidate["flavor"] == {"wine": "xgboost", "diabetes": "lightgbm"}[key]
    evaluation = pipeline.evaluate(model, candidate, ingested, conf, tracking)
    wanted = {"wine": {"f1_macro", "accuracy", "log_loss"},
              "diabetes": {"rmse", "mae", "r2", "mape"}}[key]
    assert set(evaluation["candidate"]) == wanted
    assert pipeline.deployment_trigger(model, evaluation, conf)["deploy"] is True
    reference = tracking.client.download_artifacts(candidate["run_id"],
                                                   "reference/statistics.json")
    import json
    from pathlib import Path

    document = json.loads(Path(reference).read_text())
    assert document["predictions"]["task"] == model.task
    assert document["predictions"]["kind"] == ("numeric" if key == "diabetes" else "categorical")
    assert document["predictions"]["holdout_metric"]["value"] is not None
