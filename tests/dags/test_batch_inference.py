"""batch_inference for real under Airflow (``dag.test()`` on a migrated SQLite DB): scoring
partitions in the default landing location, a real MLflow server and registry, a real model
server started by the local deployer, predictions in a SQLite database through an Airflow
connection (``common.sql``) or in Parquet files."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import mlflow
import numpy as np
import pandas as pd
import pytest

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec

SPEC = load_spec("churn")
DAGS = Path(__file__).resolve().parents[2] / "dags"
DAYS = [date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]
MODEL = "churn-batch-dagtest"
BASE = {"model_name": MODEL}  # what the model's batch DAG's Params say

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def versions(model_factory) -> list[str]:
    """Two registered versions of one model; the second is the champion."""
    first = model_factory(name=MODEL, kind="logistic_regression")
    second = model_factory(name=MODEL, kind="hist_gradient_boosting")
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", second.version)
    return [first.version, second.version]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "predictions.db"
    monkeypatch.setenv("AIRFLOW_CONN_CTCD_PREDICTIONS", f"sqlite://{quote(str(path), safe='')}")
    return path


@pytest.fixture
def dag(airflow_home, mlflow_server, ctcd_home, versions, db, model_files):
    from airflow.dag_processing.dagbag import DagBag

    model = model_files.write("churn", name=MODEL)
    bag = DagBag(dag_folder=str(DAGS / "batch_inference.py"))
    assert bag.import_errors == {}
    return bag.dags[model.batch_dag_id]


def land(home: Path, day: date, rows: int, *, csv: str | None = None) -> pd.DataFrame:
    """Unlabelled rows to score in the default scoring location; ``csv``: write this text."""
    folder = home / "scoring" / "churn" / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    if csv is not None:
        (folder / "part-0.csv").write_text(csv)
        return pd.read_csv(folder / "part-0.csv", dtype=str)
    frame = generate_snapshot(day, rows).drop(columns=[SPEC.label.name])
    frame.to_parquet(folder / "part-0.parquet", index=False)
    return frame


def _tis(run) -> list:
    return list(run.get_task_instances())


def _states(run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ti in _tis(run):
        out.setdefault(ti.task_id, []).append(str(ti.state))
    return out


def _query(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def test_in_process_maps_partitions_and_a_rerun_replaces_them(
    dag, ctcd_home: Path, db: Path, versions: list[str]
) -> None:
    sizes = dict(zip(DAYS, (700, 500, 300), strict=True))
    frames = {day: land(ctcd_home, day, rows) for day, rows in sizes.items()}

    first = dag.test(run_conf={"chunk_rows": 256})
    assert str(first.state) == "success", _states(first)
    mapped = [ti for ti in _tis(first) if ti.task_id == "score_partition"]
    assert sorted(ti.map_index for ti in mapped) == [0, 1, 2]  # one task per partition
    assert {str(ti.state) for ti in mapped} == {"success"}
    rows = _query(db, "SELECT partition_date, COUNT(*), MIN(model_version), MAX(model_version),"
                      " MIN(dag_run_id), MAX(dag_run_id) FROM predictions GROUP BY 1 ORDER BY 1")
    assert rows == [(d.isoformat(), n, versions[1], versions[1], first.run_id, first.run_id)
                    for d, n in sizes.items()]

    # The predictions are the registered champion's own, row for row.
    day = DAYS[0]
    stored = pd.DataFrame(_query(db, "SELECT row_id, prediction, input_row FROM predictions "
                                     "WHERE partition_date = ? ORDER BY input_row",
                                 day.isoformat()), columns=["id", "prediction", "input_row"])
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{versions[1]}").predict(
        frames[day][list(SPEC.feature_names)])
    assert stored["id"].tolist() == frames[day][SPEC.id_column].astype(str).tolist()
    assert np.array_equal(stored["prediction"].to_numpy(), np.asarray(expected, dtype=float))

    # Re-running a partition replaces its rows: the counts stay, the run id is the new one.
    again = dag.test(run_conf={"partitions": [d.isoformat() for d in DAYS[:2]]})
    assert str(again.state) == "success", _states(again)
    counts = _query(db, "SELECT partition_date, COUNT(*), COUNT(DISTINCT input_row), "
                        "MAX(dag_run_id) FROM predictions GROUP BY 1 ORDER BY 1")
    assert [(c[0], c[1], c[2]) for c in counts] == [(d.isoformat(), n, n)
                                                   for d, n in sizes.items()]
    assert [c[3] for c in counts] == [again.run_id, again.run_id, first.run_id]

    # Nothing new for this version: the mapped task has nothing to expand over.
    idle = dag.test(run_conf={"partitions": []})  # dag.test keeps the last run_conf
    assert str(idle.state) == "success", _states(idle)
    assert _states(idle)["score_partition"] == ["skipped"]
    assert _query(db, "SELECT COUNT(*) FROM predictions") == [(sum(sizes.values()),)]


def test_bad_rows_go_to_rejects_with_reasons_and_fail_only_above_the_share(
    dag, ctcd_home: Path, db: Path
) -> None:
    frame = generate_snapshot(DAYS[0], 200).drop(columns=[SPEC.label.name])
    text = frame.astype(object)
    text.loc[3, "age"] = "forty"  # unparsable
    text.loc[10, "contract"] = "weekly"  # not a category of the spec
    text.loc[20, "tenure_months"] = 500  # above the spec's maximum
    land(ctcd_home, DAYS[0], 0, csv=text.to_csv(index=False))

    run = dag.test(run_conf={"max_reject_share": 0.05})
    assert str(run.state) == "success", _states(run)
    rejects = _query(db, "SELECT input_row, row_id, reason, data FROM prediction_rejects "
                         "ORDER BY input_row")
    assert [r[0] for r in rejects] == [3, 10, 20]
    reasons = [r[2] for r in rejects]
    assert reasons[0].startswith("age: expected an integer") and "'forty'" in reasons[0]
    assert reasons[1].startswith("contract: 'weekly' is not one of the categories")
    assert reasons[2].startswith("tenure_months: 500 is above the maximum 120")
    assert '"forty"' in rejects[0][3]  # the rejected row's values are kept
    assert _query(db, "SELECT COUNT(*) FROM predictions") == [(197,)]

    # Above the share the task fails, without retrying, with the rows still written once.
    strict = dag.test(run_conf={"partitions": [DAYS[0].isoformat()], "max_reject_share": 0.01})
    assert str(strict.state) == "failed"
    assert _states(strict)["score_partition"] == ["failed"]
    assert _query(db, "SELECT COUNT(*), MAX(dag_run_id) FROM predictions") == [
        (197, strict.run_id)]
    assert _query(db, "SELECT COUNT(*) FROM prediction_rejects") == [(3,)]


@pytest.fixture
def server(ctcd_home: Path, versions: list[str]) -> Iterator[object]:
    from ctcd.deployers import DeploymentConfig, get_deployer

    deployer = get_deployer()
    config = DeploymentConfig(model_name=MODEL, model_uri=f"models:/{MODEL}/{versions[0]}",
                              model_version=versions[0])
    handle = deployer.deploy_model(config, timeout=240)
    yield handle
    for found in deployer.find_model_server():
        deployer.delete_model_server(found.service_id, timeout=30, force=True)


def test_endpoint_mode_records_the_answering_version_in_parquet(
    dag, ctcd_home: Path, server, versions: list[str]
) -> None:
    frame = land(ctcd_home, DAYS[1], 900)
    conf = {"mode": "endpoint", "sink": "parquet", "batch_rows": 100, "concurrency": 3,
            "chunk_rows": 400}
    run = dag.test(run_conf=conf)
    assert str(run.state) == "success", _states(run)
    path = ctcd_home / "predictions" / "churn" / f"date={DAYS[1].isoformat()}"
    out = pd.read_parquet(path / "predictions.parquet")
    # The server serves the first version (not the champion): each row says so.
    assert len(out) == 900 and set(out["model_version"]) == {versions[0]}
    assert set(out["dag_run_id"]) == {run.run_id} and set(out["model_name"]) == {MODEL}
    assert out[SPEC.id_column].tolist() == frame[SPEC.id_column].tolist()
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{versions[0]}").predict(
        frame[list(SPEC.feature_names)])
    assert np.array_equal(out["prediction"].to_numpy(), np.asarray(expected))
    assert not (path / "rejects.parquet").exists()

    rerun = dag.test(run_conf={**conf, "partitions": [DAYS[1].isoformat()]})
    assert str(rerun.state) == "success", _states(rerun)
    out = pd.read_parquet(path / "predictions.parquet")
    assert len(out) == 900 and set(out["dag_run_id"]) == {rerun.run_id}


def test_scheduled_on_the_serving_asset_and_scores_with_the_events_version(
    dag, ctcd_home: Path, db: Path, versions: list[str]
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from ctcd.pipelines import batch_inference as pipeline
    from ctcd.tracking import get_tracking

    training = DagBag(dag_folder=str(DAGS / "continuous_training.py")).dags["churn_training"]
    [promoted] = training.task_dict["promote"].outlets
    assert isinstance(dag.timetable, AssetOrTimeSchedule)  # assets, and daily
    assert set(dag.timetable.asset_condition.objects) == {
        promoted, Asset(name="dataset-churn-scoring", uri="ctcd://datasets/churn/scoring")}

    land(ctcd_home, DAYS[2], 150)
    # promote's event extra names the new champion: the run scores with that version.
    event = {"model_name": MODEL, "version": versions[0], "endpoint": "http://unused"}
    planned = pipeline.plan(BASE, event, get_tracking())
    assert planned["version"] == versions[0] and planned["partitions"] == [DAYS[2].isoformat()]
    run = dag.test(run_conf={"model_version": versions[0]})
    assert str(run.state) == "success", _states(run)
    assert _query(db, "SELECT COUNT(*), MIN(model_version), MAX(model_version) "
                      "FROM predictions") == [(150, versions[0], versions[0])]
    # The champion (the other version) has not scored it yet: the next run does.
    assert pipeline.plan(BASE, None, get_tracking())["partitions"] == [DAYS[2].isoformat()]


def test_scoring_asset_events_name_exactly_the_partitions_to_score(
    dag, ctcd_home: Path, db: Path, versions: list[str]
) -> None:
    from ctcd.errors import InvalidParams
    from ctcd.pipelines import batch_inference as pipeline
    from ctcd.tracking import get_tracking

    for day in DAYS:
        land(ctcd_home, day, 50)
    tracking = get_tracking()
    conf = {**BASE, "model_version": versions[0]}
    assert pipeline.plan(conf, None, tracking)["partitions"] == [d.isoformat() for d in DAYS]
    # A producer's events name the partitions it landed: only those, scored before or not.
    landed = [{"date": DAYS[1].isoformat()}, {"partitions": [DAYS[0].isoformat()]}]
    planned = pipeline.plan(conf, None, tracking, landed=landed)
    assert planned["partitions"] == [DAYS[0].isoformat(), DAYS[1].isoformat()]
    run = dag.test(run_conf={**conf, "partitions": planned["partitions"]})
    assert str(run.state) == "success", _states(run)
    again = pipeline.plan(conf, None, tracking, landed=landed[:1])
    assert again["partitions"] == [DAYS[1].isoformat()]  # scored by this version: still named
    # With a new champion's event too, the unscored newest partitions join them.
    both = pipeline.plan(conf, {"version": versions[0]}, tracking, landed=landed[:1])
    assert both["partitions"] == [DAYS[1].isoformat(), DAYS[2].isoformat()]
    # Run params win over events.
    named = pipeline.plan({**conf, "partitions": [DAYS[2].isoformat()]}, None, tracking,
                          landed=landed)
    assert named["partitions"] == [DAYS[2].isoformat()]

    with pytest.raises(InvalidParams, match=r"scoring Asset events' partitions \['2026-01-01'\] "
                                            r"are not in the source"):
        pipeline.plan(conf, None, tracking, landed=[{"date": "2026-01-01"}])
    with pytest.raises(InvalidParams, match=r"names partition 'yesterday', not a YYYY-MM-DD"):
        pipeline.plan(conf, None, tracking, landed=[{"date": "yesterday"}])


def test_bad_params_fail_the_plan_at_once(dag) -> None:
    run = dag.test(run_conf={"max_partition": 3})  # a typo of max_partitions
    states = _states(run)
    assert str(run.state) == "failed" and states["plan"] == ["failed"]
    assert states["score_partition"] == ["upstream_failed"]
