"""The lineage chain of a registered version, read from the session's real MLflow tracking
server over its REST API with a bounded timeout, and what it says when MLflow is down."""

from __future__ import annotations

import time
from typing import Any

from ctcd.lineage import MlflowReader, resolve
from ctcd.stack.processes import free_port


def test_the_chain_links_version_run_and_the_airflow_run_that_deployed_it(
    mlflow_server: str, model_factory: Any
) -> None:
    from mlflow import MlflowClient

    model = model_factory(name="churn-lineage", kind="logistic_regression")
    MlflowClient(mlflow_server).set_model_version_tag(
        model.name, model.version, "ctcd.approval", "approved by alice at 2026-12-06")
    chain = resolve(MlflowReader(mlflow_server), model.name, model.version,
                    airflow_url="http://airflow",
                    deployed_by={"dag_id": "churn_training", "run_id": "manual__1",
                                 "task_id": "deploy"})
    assert chain.error is None
    steps = {step.kind: step for step in chain.steps if step.kind != "airflow"}
    assert steps["version"].link == (f"{mlflow_server}/#/models/{model.name}/versions/"
                                     f"{model.version}")
    assert steps["run"].details["run_id"] == model.run_id
    assert f"/runs/{model.run_id}" in (steps["run"].link or "")
    [deployed] = [s for s in chain.steps if s.title == "Airflow (deployed by)"]
    assert deployed.link == "http://airflow/dags/churn_training/runs/manual__1/tasks/deploy"
    assert steps["approval"].value == "approved by alice at 2026-12-06"


def test_mlflow_down_makes_the_chain_say_so_within_its_timeout() -> None:
    reader = MlflowReader(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    started = time.monotonic()
    chain = resolve(reader, "churn", "3")
    assert time.monotonic() - started < 2
    assert chain.steps == () and chain.error is not None
    assert "did not answer" in chain.error and "cannot be read now" in chain.error
