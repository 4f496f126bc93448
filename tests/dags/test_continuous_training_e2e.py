"""The generated training DAGs for real under Airflow (``dag.test()`` on a migrated SQLite
DB), with partitions landed in the default landing location, a real MLflow server and a
real model server on loopback. Served answers are compared with the registered model's own
(``mlflow.pyfunc``), the oracle every MLflow client would trust."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
from tests.conftest import ModelFiles

from ctcd.data.churn import generate_snapshot
from ctcd.data.producer import produce
from ctcd.data.spec import load_spec

DAGS = Path(__file__).resolve().parents[2] / "dags"
TODAY = datetime.now(UTC).date()

pytestmark = pytest.mark.e2e


def trained(dag_id: str, conf: dict[str, Any]) -> Any:
    """One run of a training DAG, parsed afresh: a DAG object that ran once keeps the
    params of that run's conf, which would leak into the next."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "continuous_training.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id].test(run_conf=conf)


@pytest.fixture
def servers(airflow_home, mlflow_server, ctcd_home):
    yield
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


def _oracle(name: str, version: str, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rows))


def _served(handle: Any, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(handle.predict(rows))


def test_churn_trains_deploys_stops_bad_data_then_a_better_run_replaces_a_worse_one(
    servers, model_files: ModelFiles, ctcd_home: Path
) -> None:
    from ctcd.deployers import get_deployer
    from ctcd.services import ServiceHandle

    model = model_files.write("churn", gate={"metric": "roc_auc", "threshold": 0.6},
                              deployment={"strategy": "replace"})
    name = model.model_name
    landing = ctcd_home / "landing" / "churn"
    yesterday = TODAY - timedelta(days=1)
    produce(yesterday, 5_000, spec=load_spec("churn"))
    weak = {"estimator": "logistic_regression", "hyperparameters": {"C": 1e-4, "max_iter": 100}}
    first = trained("churn_training", weak)
    assert str(first.state) == "success", _states(first)
    assert set(_states(first).values()) == {"success"}
    assert _xcom(first, "ingest")["day"] == yesterday.isoformat()

    handle = _xcom(first, "deploy")
    assert isinstance(handle, ServiceHandle)  # the handle came back through XCom as itself
    assert handle.model_name == name and handle.model_version == "1"
    assert handle.run_id == first.run_id and handle.task_id == "deploy"
    assert handle.is_running()
    rows = pd.read_parquet(_xcom(first, "ingest")["snapshot"])[list(load_spec("churn")
                                                                     .feature_names)].head(25)
    assert np.array_equal(_served(handle, rows), _oracle(name, "1", rows))
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    # The deployed version leads back to the validation of the data that trained it, and
    # the registry version carries the gate's decision.
    artifacts = {a.path for a in client.list_artifacts(handle.mlflow_run_id, "validation")}
    assert "validation/data_docs" in artifacts
    assert "no champion yet" in client.get_model_version(name, "1").tags["ctcd.gate"]

    deployer = get_deployer()
    [server] = deployer.find_model_server(model_name=name, running=True)
    pid = deployer.record(server.service_id).pid
    assert pid is not None and psutil.pid_exists(pid)

    # Today's partition lands as a CSV written with the wrong delimiter: the run stops at
    # validate, nothing is registered, and the champion keeps answering.
    folder = landing / f"date={TODAY.isoformat()}"
    folder.mkdir(parents=True)
    good = generate_snapshot(TODAY, 5_000)
    good.to_csv(folder / "part-0.csv", sep=";", index=False)
    bad = trained("churn_training", weak)
    states = _states(bad)
    assert str(bad.state) == "failed"
    assert states["ingest"] == "success" and states["validate"] == "failed", states
    assert all(
        states[t] in {"upstream_failed", "None"}
        for t in ("train", "register", "deploy", "promote")
    ), states
    assert [mv.version for mv in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert np.array_equal(_served(handle, rows), _oracle(name, "1", rows))
    assert Path(_xcom(bad, "validate", key="data_docs")).is_file()  # kept, failed or not

    # The partition is landed again, correctly; a better model (gradient boosting against
    # the weak logistic regression) is deployed into the same server: no second process.
    (folder / "part-0.csv").unlink()
    good.to_csv(folder / "part-0.csv", index=False)
    better = trained("churn_training", {"estimator": "hist_gradient_boosting",
                                        "hyperparameters": {}})
    assert str(better.state) == "success", _states(better)
    assert _states(better)["deploy"] == "success", _states(better)
    assert _xcom(better, "ingest")["day"] == TODAY.isoformat()
    evaluation = _xcom(better, "evaluate")
    assert evaluation["candidate"]["roc_auc"] >= evaluation["champion"]["roc_auc"]
    assert [s.service_id for s in deployer.find_model_server(model_name=name)] == [
        server.service_id]
    assert deployer.record(server.service_id).pid == pid
    second = _xcom(better, "deploy")
    assert second.endpoint == handle.endpoint and second.model_version == "2"
    assert np.array_equal(_served(handle, rows), _oracle(name, "2", rows))

    # A worse model on the same partition is stopped by the gate: version 2 keeps serving.
    worse = trained("churn_training", {**weak, "force": True})
    states = _states(worse)
    assert str(worse.state) == "success" and states["deployment_trigger"] == "success", states
    assert states["register"] == "skipped" and states["deploy"] == "skipped", states
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert np.array_equal(_served(handle, rows), _oracle(name, "2", rows))

    # Nothing new has landed: the next run is skipped at ingest.
    third = trained("churn_training", {})
    assert _states(third)["ingest"] == "skipped" and str(third.state) == "success"
    assert _states(third)["train"] == "skipped"


# A weak and a strong trainer configuration of each example, and its scoring check.
EXAMPLES = {
    "wine": ({"n_estimators": 2, "max_depth": 1, "learning_rate": 0.1, "n_jobs": 1},
             {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.2, "n_jobs": 1}),
    "diabetes": ({"n_estimators": 3, "learning_rate": 0.01, "num_leaves": 4},
                 {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15}),
}


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_an_example_model_end_to_end_then_batch_scored(
    servers, model_files: ModelFiles, ctcd_home: Path, db_connection: Path, key: str
) -> None:
    """Trained (weak), gated, registered, deployed, verified, promoted and batch-scored; a
    better run deploys into the same server; a worse one leaves the champion serving."""
    import sqlite3

    from airflow.dag_processing.dagbag import DagBag

    from ctcd.deployers import get_deployer

    model = model_files.example(key, gate={"threshold": 0.2 if key == "wine" else 1000.0},
                                deployment={"strategy": "replace"})
    name, spec = model.model_name, load_spec(model.dataset)
    weak, strong = EXAMPLES[key]
    for back in (2, 1, 0):
        produce(TODAY - timedelta(days=back), 1_500, spec=spec)
    dag_id = f"{key}_training"
    first = trained(dag_id, {"hyperparameters": weak})
    assert str(first.state) == "success", _states(first)
    assert set(_states(first).values()) == {"success"}, _states(first)
    handle = _xcom(first, "deploy")
    rows = pd.read_parquet(_xcom(first, "ingest")["snapshot"])[list(spec.feature_names)].head(40)
    expected = _oracle(name, "1", rows)
    if key == "diabetes":
        np.testing.assert_allclose(_served(handle, rows).astype(float), expected, rtol=1e-6)
    else:
        assert np.array_equal(_served(handle, rows), expected)

    # Rows to score land; the model's batch DAG scores them with the champion, in process.
    produce(TODAY, 300, spec=spec, purpose="scoring")
    batch = DagBag(dag_folder=str(DAGS / "batch_inference.py")).dags[f"{key}_batch_inference"]
    scored = batch.test(run_conf={})
    assert str(scored.state) == "success", _states(scored)
    with sqlite3.connect(db_connection) as db:
        stored = pd.read_sql_query(
            "SELECT * FROM predictions WHERE model_name = ?", db, params=(name,))
    assert len(stored) == 300 and set(stored["model_version"].astype(str)) == {"1"}
    landed = pd.read_parquet(ctcd_home / "scoring" / key / f"date={TODAY}" / "part-0.parquet")
    by_id = stored.set_index("row_id").loc[landed[spec.id_column]]
    truth = _oracle(name, "1", landed[list(spec.feature_names)])
    got = by_id["prediction"].to_numpy()
    if key == "diabetes":
        np.testing.assert_allclose(got.astype(float), truth, rtol=1e-6)
    else:
        assert np.array_equal(got.astype(int), truth.astype(int))

    # A stronger model on the same window deploys into the same server.
    [server] = get_deployer().find_model_server(model_name=name, running=True)
    better = trained(dag_id, {"hyperparameters": strong, "force": True})
    assert _states(better)["promote"] == "success", _states(better)
    assert _xcom(better, "deploy").model_version == "2"
    assert [s.service_id for s in get_deployer().find_model_server(model_name=name)] == [
        server.service_id]
    np.testing.assert_allclose(_served(handle, rows).astype(float),
                               _oracle(name, "2", rows).astype(float), rtol=1e-6)
    # The weak one again: the gate keeps version 2.
    worse = trained(dag_id, {"hyperparameters": weak, "force": True})
    assert _states(worse)["register"] == "skipped", _states(worse)
    reason = _xcom(worse, "evaluate")
    assert reason["champion_version"] == "2"
    assert mlflow.MlflowClient().get_model_version_by_alias(name, "champion").version == "2"


@pytest.fixture
def db_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from urllib.parse import quote

    path = tmp_path / "predictions.db"
    monkeypatch.setenv("AIRFLOW_CONN_CTCD_PREDICTIONS", f"sqlite://{quote(str(path), safe='')}")
    return path


def test_bad_conf_fails_the_first_task_and_deploys_nothing(
    servers, model_files: ModelFiles
) -> None:
    model = model_files.write("churn")
    run = trained("churn_training", {"min_roc_auc": 0.9})
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["ingest"] == "failed"
    assert all(
        state in {"upstream_failed", "None"} for task, state in states.items() if task != "ingest"
    )
    from ctcd.deployers import get_deployer

    assert get_deployer().find_model_server(model_name=model.model_name) == []
