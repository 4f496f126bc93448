"""continuous_training for real under Airflow (``dag.test()`` on a migrated SQLite DB),
with a real MLflow server and a real model server on loopback."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest

from ctcd.data.churn import FEATURES

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "continuous_training.py"

pytestmark = pytest.mark.e2e


@pytest.fixture
def model_name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"churn-dagtest-{request.node.name.removeprefix('test_')[:30]}"
    monkeypatch.setenv("CTCD_MODEL_NAME", name)
    return name


@pytest.fixture
def dag(airflow_home, mlflow_server, ctcd_home, model_name):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    yield bag.dags["continuous_training"]
    from ctcd.deployers import get_deployer

    deployer = get_deployer()
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=30, force=True)


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _xcom(run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
            )
        ).first()
        return deserialize(XComModel.deserialize_value(row))


def test_trains_deploys_serves_and_a_second_run_reuses_the_server(dag, model_name: str) -> None:
    from ctcd.deployers import get_deployer
    from ctcd.services import ServiceHandle

    conf = {"rows": 5_000, "model_type": "logistic_regression", "strategy": "replace"}
    first = dag.test(run_conf=conf)
    assert str(first.state) == "success", _states(first)
    assert set(_states(first).values()) == {"success"}

    handle = _xcom(first, "deploy")
    assert isinstance(handle, ServiceHandle)  # the handle came back through XCom as itself
    assert handle.model_name == model_name and handle.model_version == "1"
    assert handle.run_id == first.run_id and handle.task_id == "deploy"
    assert handle.is_running()

    # A prediction from the served model equals the registered model's own answer.
    rows = pd.read_parquet(_xcom(first, "ingest")["snapshot"])[list(FEATURES)].head(25)
    expected = mlflow.pyfunc.load_model(f"models:/{model_name}/1").predict(rows)
    assert np.array_equal(np.asarray(handle.predict(rows)), np.asarray(expected))
    assert mlflow.MlflowClient().get_model_version_by_alias(model_name, "champion").version == "1"

    deployer = get_deployer()
    [server] = deployer.find_model_server(model_name=model_name, running=True)
    pid = deployer.record(server.service_id).pid
    assert pid is not None and psutil.pid_exists(pid)

    # The second run finds the same server and deploys into it: no second server process.
    second = dag.test(run_conf={**conf, "hyperparameters": {"C": 3.0, "max_iter": 500}})
    assert str(second.state) == "success", _states(second)
    servers = deployer.find_model_server(model_name=model_name)
    assert [s.service_id for s in servers] == [server.service_id]
    assert deployer.record(server.service_id).pid == pid
    if _states(second)["deploy"] == "success":
        second_handle = _xcom(second, "deploy")
        assert second_handle.endpoint == handle.endpoint
        assert second_handle.model_version == "2"
    else:  # the trigger kept the champion; the server still answers with it
        assert _states(second)["deploy"] == "skipped"
    assert handle.is_running()


def test_bad_data_stops_the_run_before_anything_is_trained(dag, model_name: str) -> None:
    run = dag.test(run_conf={"rows": 2_000, "corruption": "nulls"})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["ingest"] == "success" and states["validate"] == "failed"
    assert states["train"] in {"upstream_failed", "None"} and states["deploy"] in {
        "upstream_failed",
        "None",
    }
    assert mlflow.MlflowClient().search_model_versions(f"name = '{model_name}'") == []


def test_bad_conf_fails_the_first_task_and_deploys_nothing(dag, model_name: str) -> None:
    run = dag.test(run_conf={"threshold": 0.9})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["ingest"] == "failed"
    assert all(
        state in {"upstream_failed", "None"} for task, state in states.items() if task != "ingest"
    )
    from ctcd.deployers import get_deployer

    assert get_deployer().find_model_server(model_name=model_name) == []
