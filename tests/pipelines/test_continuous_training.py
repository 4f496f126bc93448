"""The continuous_training steps outside Airflow, on a landed partition and a real MLflow."""

from __future__ import annotations

from datetime import timedelta

import mlflow
import pytest
from tests.pipelines.landing import TODAY, Landing, Run

from ctcd.errors import InvalidParams
from ctcd.pipelines import continuous_training as pipeline
from ctcd.tracking import Tracking

LINEAGE = {"dag_id": "continuous_training", "run_id": "manual__test", "task_id": "train"}


@pytest.fixture
def model_name(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    name = f"steps-{request.node.name[:40]}"
    monkeypatch.setenv("CTCD_MODEL_NAME", name)
    return name


def test_ingest_checks_params_first(landing: Landing, tracking: Tracking) -> None:
    with pytest.raises(InvalidParams, match="unknown parameter 'threshold'"):
        pipeline.ingest({"threshold": 0.9}, tracking)
    with pytest.raises(InvalidParams, match="No data set spec 'nope'"):
        pipeline.ingest({"dataset": "nope"}, tracking)


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


def test_train_evaluate_gate_register_promote_then_skip(
    landing: Landing, tracking: Tracking, run: Run, model_name: str
) -> None:
    landing.parquet(landing.frame(rows=4_000))
    conf = {"landing_uri": landing.uri, "model_type": "logistic_regression"}
    ingested, validation = run()
    candidate = pipeline.train(ingested, validation, conf, LINEAGE, tracking)

    trained = tracking.client.get_run(candidate["run_id"])
    assert trained.data.params["model_type"] == "logistic_regression"
    assert trained.data.metrics["holdout_roc_auc"] > 0.75
    assert trained.data.tags["airflow.dag_id"] == "continuous_training"
    assert trained.data.tags["ctcd.partition"] == TODAY.isoformat()
    assert trained.data.tags["ctcd.validation"] == "passed"
    assert [d.dataset.name for d in trained.inputs.dataset_inputs] == [f"churn/date={TODAY}"]
    # The validation of the data goes with the model: its JSON result and Data Docs page.
    logged = {a.path for a in tracking.client.list_artifacts(candidate["run_id"], "validation")}
    assert any(p.endswith(".json") for p in logged) and "validation/data_docs" in logged
    with tracking.active():
        info = mlflow.models.get_model_info(candidate["model_uri"])
    assert info.signature is not None and info.saved_input_example_info is not None

    evaluation = pipeline.evaluate(candidate, ingested, conf, tracking)
    assert evaluation["champion"] is None
    assert evaluation["candidate"]["roc_auc"] == pytest.approx(
        trained.data.metrics["holdout_roc_auc"]
    )
    assert pipeline.deployment_trigger(evaluation, conf)["deploy"] is True

    registered = pipeline.register(candidate, LINEAGE, tracking)
    assert registered["version"] == "1"
    assert pipeline.register(candidate, LINEAGE, tracking)["version"] == "1"  # retried task
    assert tracking.alias_version(model_name, "challenger") == "1"
    pipeline.promote(registered, tracking)
    assert tracking.champion_version(model_name) == "1"
    assert tracking.alias_version(model_name, "challenger") is None

    # The partition is now trained on: the next run has nothing new to do...
    with pytest.raises(pipeline.NothingNew, match="trained on already"):
        run()
    # ...unless forced; and a forced candidate is compared with the champion on the same rows.
    ingested, validation = run(force=True)
    weaker = {**conf, "hyperparameters": {"C": 1e-5, "max_iter": 50}}
    candidate2 = pipeline.train(ingested, validation, weaker, LINEAGE, tracking)
    evaluation2 = pipeline.evaluate(candidate2, ingested, weaker, tracking)
    assert evaluation2["champion_version"] == "1"
    assert evaluation2["champion"]["roc_auc"] == pytest.approx(evaluation["candidate"]["roc_auc"])
    decision = pipeline.deployment_trigger(evaluation2, {**weaker, "min_roc_auc": 0.5})
    assert decision["deploy"] is False and "does not beat champion v1" in decision["reason"]
    assert tracking.client.get_run(candidate2["run_id"]).data.tags["champion_version"] == "1"
