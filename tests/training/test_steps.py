"""Each continuous_training step's logic, outside Airflow, against a real MLflow server."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import mlflow
import pytest

from ctcd import registry
from ctcd.errors import DataValidationError, InvalidParams
from ctcd.training import steps

LINEAGE = {"dag_id": "continuous_training", "run_id": "manual__test", "task_id": "train"}


@pytest.fixture
def model_name(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    name = f"steps-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    monkeypatch.setenv("CTCD_MODEL_NAME", name)
    return name


def test_ingest_checks_params_first(ctcd_home: Path) -> None:
    with pytest.raises(InvalidParams, match="unknown parameter 'threshold'"):
        steps.ingest({"threshold": 0.9}, date(2026, 7, 1))
    assert not (ctcd_home / "data").exists()


def test_ingest_uses_logical_date_unless_overridden(ctcd_home: Path) -> None:
    out = steps.ingest({"rows": 1_000}, date(2026, 7, 1))
    assert out["day"] == "2026-07-01" and Path(out["snapshot"]).is_file()
    out = steps.ingest({"rows": 1_000, "snapshot_date": "2026-07-09"}, date(2026, 7, 1))
    assert out["day"] == "2026-07-09"


def test_validate_stops_corrupt_data(ctcd_home: Path) -> None:
    out = steps.ingest({"rows": 2_000, "corruption": "out_of_range"}, date(2026, 7, 1))
    with pytest.raises(DataValidationError, match="tenure_months"):
        steps.validate(out["snapshot"])
    assert list((ctcd_home / "reports").glob("validation-*.json"))


def test_train_evaluate_gate_register_promote(
    ctcd_home: Path, mlflow_server: str, model_name: str
) -> None:
    conf = {"rows": 4_000, "model_type": "logistic_regression"}
    snapshot = steps.ingest(conf, date(2026, 7, 1))["snapshot"]
    steps.validate(snapshot)
    candidate = steps.train(snapshot, conf, LINEAGE)

    run = mlflow.MlflowClient().get_run(candidate["run_id"])
    assert run.data.params["model_type"] == "logistic_regression"
    assert run.data.metrics["holdout_roc_auc"] > 0.75
    assert run.data.tags["airflow.dag_id"] == "continuous_training"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["snapshot_date=2026-07-01"]
    model_info = mlflow.models.get_model_info(candidate["model_uri"])
    assert model_info.signature is not None and model_info.saved_input_example_info is not None

    evaluation = steps.evaluate(candidate, snapshot, conf)
    assert evaluation["champion"] is None
    assert evaluation["candidate"]["roc_auc"] == pytest.approx(run.data.metrics["holdout_roc_auc"])
    decision = steps.deployment_trigger(evaluation, conf)
    assert decision["deploy"] is True, decision

    registered = steps.register(candidate, LINEAGE)
    assert registered["version"] == "1"
    assert steps.register(candidate, LINEAGE)["version"] == "1"  # a retried task re-uses it
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(model_name, "challenger").version == "1"
    steps.promote(registered)
    assert registry.champion_version(model_name) == "1"

    # The next candidate is compared with the champion on the same holdout rows.
    weaker = {**conf, "hyperparameters": {"C": 1e-5, "max_iter": 50}}
    candidate2 = steps.train(snapshot, weaker, LINEAGE)
    evaluation2 = steps.evaluate(candidate2, snapshot, weaker)
    assert evaluation2["champion_version"] == "1"
    assert evaluation2["champion"]["roc_auc"] == pytest.approx(evaluation["candidate"]["roc_auc"])
    decision2 = steps.deployment_trigger(evaluation2, {**weaker, "min_roc_auc": 0.5})
    assert decision2["deploy"] is False and "does not beat champion v1" in decision2["reason"]
    assert mlflow.MlflowClient().get_run(candidate2["run_id"]).data.tags["champion_version"] == "1"
