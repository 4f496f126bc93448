"""model_monitoring for real under Airflow (``dag.test()`` on a migrated SQLite DB): a real
MLflow server, a real model server logging the requests sent to it, the watermark in an
Airflow Variable, and continuous_training triggered with the reason in its conf."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from tests.monitoring.live import ServedModel, send, served_model, traffic, wait_logged

from ctcd.monitoring.served import max_rowid

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "model_monitoring.py"
MODEL = "churn-monitoring-dagtest"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(airflow_home: Path, mlflow_server: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    home = tmp_path_factory.mktemp("ctcd")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTCD_HOME", str(home))
        patch.setenv("CTCD_MODEL_NAME", MODEL)
        patch.delenv("CTCD_SERVER_REQUEST_LOG_PATH", raising=False)
        with served_model(MODEL, home) as model:
            yield model


@pytest.fixture(scope="module")
def dag(served: ServedModel) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["model_monitoring"]


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _retraining_runs() -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "continuous_training").all()
        session.expunge_all()
    return [r for r in runs if (r.conf or {}).get("trigger_reason", "").startswith(
        f"model {MODEL} ")]


def _delete(runs: list[Any]) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for run in runs:
            session.query(DagRun).filter(DagRun.id == run.id).delete()


def _watermark() -> dict[str, Any]:
    from airflow.models.variable import Variable

    return dict(json.loads(Variable.get(f"ctcd_monitoring__{MODEL}")))


def _stream(model: ServedModel, drift: float, day: date) -> None:
    start = max_rowid(model.log_path)
    send(model, traffic(day, 800, drift=drift))
    wait_logged(model, start, 800)


def test_drifted_traffic_triggers_continuous_training_with_the_reason(
    dag: Any, served: ServedModel
) -> None:
    _delete(_retraining_runs())
    _stream(served, 1.0, date(2026, 3, 1))

    run = dag.test(run_conf={"cooldown_hours": 0})

    try:
        assert str(run.state) == "success", _states(run)
        assert _states(run) == {"check": "success", "retraining_needed": "success",
                                "trigger_retraining": "success"}
        (triggered,) = _retraining_runs()
        reason = triggered.conf["trigger_reason"]
        assert "features drifted" in reason and "drift report" in reason
        assert set(triggered.conf) == {"trigger_reason"}
        watermark = _watermark()
        assert watermark["version"] == served.version
        assert watermark["rowid"] == max_rowid(served.log_path) and watermark["last_trigger"]
        # continuous_training accepts the conf it is given (its Params forbid unknown keys).
        from ctcd.training.params import parse_params

        assert parse_params(triggered.conf).trigger_reason == reason
    finally:
        _delete(_retraining_runs())


def test_undrifted_traffic_reports_and_skips_the_trigger(dag: Any, served: ServedModel) -> None:
    _stream(served, 0.0, date(2026, 3, 2))
    before = max_rowid(served.log_path)

    run = dag.test(run_conf={"cooldown_hours": 0})

    assert str(run.state) == "success", _states(run)
    assert _states(run) == {"check": "success", "retraining_needed": "success",
                            "trigger_retraining": "skipped"}
    assert _retraining_runs() == []
    assert _watermark()["rowid"] == before
