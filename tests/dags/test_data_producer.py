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
    landed = ctcd_home / "landing" / "churn" / "date=2026-11-20" / "part-0.csv"
    frame = pd.read_csv(landed)
    assert len(frame) == 1_500 and list(frame.columns) == list(load_spec("churn").columns)
    with create_session() as session:
        events = [
            e
            for e in session.query(AssetEvent).all()
            if e.source_run_id == run.run_id and e.asset.uri == "ctcd://datasets/churn"
        ]
    assert len(events) == 1 and events[0].extra["rows"] == 1_500


def test_continuous_training_is_scheduled_on_the_asset(airflow_home) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[2] / "dags"
    dag = DagBag(dag_folder=str(dags / "continuous_training.py")).dags["continuous_training"]
    assert dag.schedule.asset_condition.uri == "ctcd://datasets/churn"
