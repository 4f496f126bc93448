"""continuous_training for real under Airflow (``dag.test()`` on a migrated SQLite DB),
with partitions landed in the default landing location, a real MLflow server and a real
model server on loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest

from ctcd.data.churn import generate_snapshot
from ctcd.data.producer import produce
from ctcd.data.spec import load_spec

FEATURES = load_spec("churn").feature_names

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


def _xcom(run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key=key
            )
        ).first()
        return deserialize(XComModel.deserialize_value(row))


def test_trains_deploys_serves_stops_bad_data_and_a_fixed_partition_reuses_the_server(
    dag, model_name: str, ctcd_home: Path
) -> None:
    from ctcd.deployers import get_deployer
    from ctcd.services import ServiceHandle

    landing = ctcd_home / "landing" / "churn"
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    produce(yesterday, 5_000, spec=load_spec("churn"))
    conf = {"model_type": "logistic_regression", "strategy": "replace"}
    first = dag.test(run_conf=conf)
    assert str(first.state) == "success", _states(first)
    assert set(_states(first).values()) == {"success"}
    assert _xcom(first, "ingest")["day"] == yesterday.isoformat()

    handle = _xcom(first, "deploy")
    assert isinstance(handle, ServiceHandle)  # the handle came back through XCom as itself
    assert handle.model_name == model_name and handle.model_version == "1"
    assert handle.run_id == first.run_id and handle.task_id == "deploy"
    assert handle.is_running()

    # A prediction from the served model equals the registered model's own answer.
    rows = pd.read_parquet(_xcom(first, "ingest")["snapshot"])[list(FEATURES)].head(25)
    expected = mlflow.pyfunc.load_model(f"models:/{model_name}/1").predict(rows)
    assert np.array_equal(np.asarray(handle.predict(rows)), np.asarray(expected))
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    # The deployed version leads back to the validation of the data that trained it.
    artifacts = {a.path for a in client.list_artifacts(handle.mlflow_run_id, "validation")}
    assert "validation/data_docs" in artifacts

    deployer = get_deployer()
    [server] = deployer.find_model_server(model_name=model_name, running=True)
    pid = deployer.record(server.service_id).pid
    assert pid is not None and psutil.pid_exists(pid)

    # Today's partition lands as a CSV written with the wrong delimiter: the run stops at
    # validate, nothing is registered, and the champion keeps answering.
    folder = landing / f"date={today.isoformat()}"
    folder.mkdir(parents=True)
    good = generate_snapshot(today, 5_000)
    good.to_csv(folder / "part-0.csv", sep=";", index=False)
    bad = dag.test(run_conf=conf)
    states = _states(bad)
    assert str(bad.state) == "failed"
    assert states["ingest"] == "success" and states["validate"] == "failed", states
    assert all(
        states[t] in {"upstream_failed", "None"}
        for t in ("train", "register", "deploy", "promote")
    ), states
    assert [mv.version for mv in client.search_model_versions(f"name = '{model_name}'")] == ["1"]
    assert client.get_model_version_by_alias(model_name, "champion").version == "1"
    assert np.array_equal(np.asarray(handle.predict(rows)), np.asarray(expected))
    docs = _xcom(bad, "validate", key="data_docs")
    assert Path(docs).is_file()  # the Data Docs page of the failed validation is kept

    # The partition is landed again, correctly: the next run trains on it and deploys
    # into the same server: no second server process.
    (folder / "part-0.csv").unlink()
    good.to_csv(folder / "part-0.csv", index=False)
    second = dag.test(run_conf={**conf, "hyperparameters": {"C": 3.0, "max_iter": 500}})
    assert str(second.state) == "success", _states(second)
    assert _xcom(second, "ingest")["day"] == today.isoformat()
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

    # Nothing new has landed: the next run is skipped at ingest.
    third = dag.test(run_conf=conf)
    assert _states(third)["ingest"] == "skipped" and str(third.state) == "success"
    assert _states(third)["train"] == "skipped"


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
