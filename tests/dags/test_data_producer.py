"""data_producer under Airflow (``dag.test()``): a partition lands, and the data set's Asset
gets an event that schedules continuous_training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ctcd.data.spec import load_spec

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "data_producer.py"

pytestmark = pytest.mark.e2e


def test_produces_a_partition_and_updates_the_asset(airflow_home, ctcd_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    run = bag.dags["data_producer"].test(
        run_conf={"date": "2026-11-20", "rows": 1_500, "format": "csv"}
    )
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"route": "success", "land_training": "success", "land_scoring": "skipped"}
    landed = ctcd_home / "landing" / "churn" / "date=2026-11-20" / "part-0.csv"
    frame = pd.read_csv(landed)
    assert len(frame) == 1_500 and list(frame.columns) == list(load_spec("churn").columns)
    with create_session() as session:
        events = [e for e in session.query(AssetEvent).all() if e.source_run_id == run.run_id]
        assert [e.asset.uri for e in events] == ["ctcd://datasets/churn"]
        assert events[0].extra["rows"] == 1_500


def test_each_models_training_is_scheduled_on_its_data_sets_asset(airflow_home) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[2] / "dags"
    bag = DagBag(dag_folder=str(dags / "continuous_training.py"))
    for model, dataset in (("churn", "churn"), ("wine", "wine"), ("diabetes", "diabetes")):
        dag = bag.dags[f"{model}_training"]
        assert dag.schedule.asset_condition.uri == f"ctcd://datasets/{dataset}"


@pytest.mark.parametrize("dataset", ["wine", "diabetes"])
def test_the_example_data_sets_land_and_name_their_asset(
    airflow_home, ctcd_home: Path, dataset: str
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    run = DagBag(dag_folder=str(DAG_FILE)).dags["data_producer"].test(
        run_conf={"dataset": dataset, "date": "2026-11-22", "rows": 800})
    assert str(run.state) == "success"
    spec = load_spec(dataset)
    frame = pd.read_parquet(ctcd_home / "landing" / dataset / "date=2026-11-22" /
                            "part-0.parquet")
    assert len(frame) == 800 and list(frame.columns) == list(spec.columns)
    with create_session() as session:
        events = [e.asset.uri for e in session.query(AssetEvent).all()
                  if e.source_run_id == run.run_id]
    assert events == [f"ctcd://datasets/{dataset}"]


def test_scoring_rows_land_unlabelled_and_start_batch_inference(
    airflow_home, ctcd_home: Path
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(DAG_FILE))
    run = bag.dags["data_producer"].test(
        run_conf={"purpose": "scoring", "date": "2026-11-21", "rows": 700}
    )
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"route": "success", "land_scoring": "success", "land_training": "skipped"}
    landed = ctcd_home / "scoring" / "churn" / "date=2026-11-21" / "part-0.parquet"
    frame = pd.read_parquet(landed)
    spec = load_spec("churn")
    assert len(frame) == 700 and spec.label.name not in frame.columns
    assert not (ctcd_home / "landing" / "churn" / "date=2026-11-21").exists()
    with create_session() as session:
        events = [(e.asset.uri, e.extra) for e in session.query(AssetEvent).all()
                  if e.source_run_id == run.run_id]
    # only the scoring Asset: landing rows to score must not start a training run
    assert [(uri, extra["date"]) for uri, extra in events] == [
        ("ctcd://datasets/churn/scoring", "2026-11-21")]
