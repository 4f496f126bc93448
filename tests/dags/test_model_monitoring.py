"""model_monitoring for real under Airflow (``dag.test()`` on a migrated SQLite DB): a real
MLflow server, a real model server logging the requests sent to it, the watermark in an
Airflow Variable, and continuous_training triggered with the reason in its conf."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.monitoring.live import ServedModel, send, served_model, traffic, wait_logged

from ctcd.monitoring.served import max_rowid

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "model_monitoring.py"
MODEL = "churn-monitoring-dagtest"
RETRAIN_DAG = "churn_training"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(airflow_home: Path, mlflow_server: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    home = tmp_path_factory.mktemp("ctcd")
    models = tmp_path_factory.mktemp("models")
    (models / "churn.yaml").write_text(f"name: {MODEL}\ndataset: churn\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTCD_HOME", str(home))
        patch.setenv("CTCD_MODELS_DIR", str(models))
        patch.delenv("CTCD_SERVER_REQUEST_LOG_PATH", raising=False)
        with served_model(MODEL, home) as model:
            yield model


def monitor(conf: dict[str, Any]) -> Any:
    """One run of the model's monitoring DAG, parsed afresh (a DAG object that ran keeps
    that run's params)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["churn_monitoring"].test(run_conf=conf)


@pytest.fixture
def dag(served: ServedModel) -> Any:
    return monitor


def land_new_data(day: date) -> None:
    """A partition of the model's data set lands: there is something new to retrain on."""
    from ctcd.data.producer import produce
    from ctcd.data.spec import load_spec

    produce(day, 1_000, spec=load_spec("churn"))


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _retraining_runs() -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == RETRAIN_DAG).all()
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

    return dict(json.loads(Variable.get(f"ctcd_monitoring__{MODEL}", default_var="{}")))


def _stream(model: ServedModel, drift: float, day: date) -> None:
    start = max_rowid(model.log_path)
    send(model, traffic(day, 800, drift=drift))
    wait_logged(model, start, 800)


def test_drifted_traffic_triggers_continuous_training_with_the_reason(
    dag: Any, served: ServedModel
) -> None:
    _delete(_retraining_runs())
    _stream(served, 1.0, date(2026, 3, 1))
    land_new_data(date(2026, 3, 1))

    run = dag({"cooldown_hours": 0})

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
        assert watermark["rowid"] == max_rowid(served.log_path)
        assert datetime.fromisoformat(watermark["last_trigger"]) > run.start_date
        # continuous_training accepts the conf it is given (its Params forbid unknown keys).
        from ctcd.models import load_model
        from ctcd.training.params import parse_params

        assert parse_params(triggered.conf, load_model("churn")).trigger_reason == reason
    finally:
        _delete(_retraining_runs())


def test_undrifted_traffic_reports_and_skips_the_trigger(dag: Any, served: ServedModel) -> None:
    _stream(served, 0.0, date(2026, 3, 2))
    before = max_rowid(served.log_path)

    run = dag({"cooldown_hours": 0})

    assert str(run.state) == "success", _states(run)
    assert _states(run) == {"check": "success", "retraining_needed": "success",
                            "trigger_retraining": "skipped"}
    assert _retraining_runs() == []
    assert _watermark()["rowid"] == before


def test_no_second_retraining_while_one_is_queued(dag: Any, served: ServedModel) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.timezone import utcnow
    from airflow.utils.types import DagRunType

    _stream(served, 1.0, date(2026, 3, 3))
    last_trigger = _watermark().get("last_trigger")
    queued = DagRun(dag_id=RETRAIN_DAG, run_id="queued-before-monitoring",
                    run_after=utcnow(), state=DagRunState.QUEUED, run_type=DagRunType.MANUAL,
                    conf={"trigger_reason": f"model {MODEL} (queued by the test)"})
    with create_session() as session:
        session.add(queued)
    try:
        run = dag({"cooldown_hours": 0})

        assert str(run.state) == "success", _states(run)
        assert _states(run)["trigger_retraining"] == "skipped"
        assert [r.run_id for r in _retraining_runs()] == ["queued-before-monitoring"]
        assert _watermark().get("last_trigger") == last_trigger  # no cool-down started
    finally:
        _delete(_retraining_runs())


def test_drift_with_nothing_new_to_train_on_waits_for_data(dag: Any, served: ServedModel) -> None:
    """Every partition was trained on already: retraining would learn nothing, so the run
    says so, starts no cool-down, and leaves the reason for the next training run."""
    from ctcd.data.watermark import training_tags
    from ctcd.pipelines.ingest import pending_retrain, set_pending_retrain
    from ctcd.tracking import get_tracking

    _delete(_retraining_runs())
    land_new_data(date(2026, 3, 4))
    tracking = get_tracking()
    from ctcd.data.sources import default_landing_uri

    trained = tracking.client.create_run(tracking.experiment_id(), tags=training_tags(
        MODEL, "churn", default_landing_uri("churn").rstrip("/"), date(2026, 3, 4)))
    tracking.client.set_terminated(trained.info.run_id, "FINISHED")
    _stream(served, 1.0, date(2026, 3, 5))
    last_trigger = _watermark().get("last_trigger")
    try:
        run = dag({"cooldown_hours": 0})
        assert str(run.state) == "success", _states(run)
        assert _states(run)["trigger_retraining"] == "skipped"
        assert _retraining_runs() == []
        assert _watermark().get("last_trigger") == last_trigger  # no cool-down started
        pending = pending_retrain(tracking, MODEL)
        assert pending is not None and "drift seen; waiting for new data" in pending
    finally:
        set_pending_retrain(tracking, MODEL, None)
