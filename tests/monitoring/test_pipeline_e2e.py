"""One monitoring check end to end: a real MLflow server holding the champion and its
reference statistics, a real model server (started by the local deployer) logging the
requests sent to it over HTTP, and the report on disk and in MLflow.

Each test reads only the requests it sent (its watermark is the log's last rowid before
it sends), so the tests share one server without depending on each other's order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from PIL import Image
from tests.monitoring.live import ServedModel, send, served_model, traffic, wait_logged

from ctcd.data.spec import load_spec
from ctcd.monitoring import pipeline
from ctcd.monitoring.labels import record_labels
from ctcd.monitoring.params import MonitoringParams
from ctcd.monitoring.report import EXPERIMENT
from ctcd.monitoring.served import max_rowid

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    with served_model("churn-monitoring-e2e", tmp_path_factory.mktemp("ctcd")) as model:
        yield model


def _check(model: ServedModel, tmp_path: Path, rowid: int, **params: Any) -> Any:
    return pipeline.check(
        MonitoringParams(**params), {"version": model.version, "rowid": rowid},
        client=mlflow.MlflowClient(), request_log=model.log_path,
        labels_path=tmp_path / "labels.sqlite", reports_dir=tmp_path / "reports",
        model_name=model.name,
    )


def _stream(model: ServedModel, rows: pd.DataFrame) -> int:
    start = max_rowid(model.log_path)
    send(model, rows)
    wait_logged(model, start, len(rows))
    return start


def test_a_drifted_stream_decides_to_retrain_and_reports_it(served: ServedModel,
                                                            tmp_path: Path) -> None:
    rows = traffic(date(2026, 2, 1), 1_000, drift=1.0)
    start = _stream(served, rows)
    record_labels(rows.head(400), load_spec("churn"), tmp_path / "labels.sqlite")

    result = _check(served, tmp_path, start)

    assert result.status == "drift" and result.retrain
    assert "features drifted" in result.reason and "contract" in result.reason
    assert result.summary["samples"] == 1_000 and result.summary["requests"] == 20
    assert result.watermark["rowid"] == max_rowid(served.log_path) > start
    assert "last_trigger" not in result.watermark  # set by the DAG when it does trigger
    assert result.summary["labelled_rows"] == 400
    assert 0.0 < result.summary["live_accuracy"] < 1.0
    # The report: a table that parses, a plot that opens, a page, a JSON document.
    directory = Path(result.report_dir)
    table = pd.read_csv(directory / "drift.csv")
    assert table["drifted"].sum() >= 4 and "contract" in set(table.loc[table["drifted"], "name"])
    with Image.open(directory / "drift.png") as image:
        image.verify()
    document = json.loads((directory / "drift.json").read_text())
    assert document["status"] == "drift" and document["retrain"] is True
    assert "drift report" in result.reason and str(directory) in result.reason
    # ... and the same in MLflow, with the model version pointing at it.
    client = mlflow.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["ctcd.model_version"] == served.version
    assert run.data.tags["ctcd.champion_run_id"] == served.run_id
    assert run.data.metrics["psi.contract"] > 0.2 and "live_accuracy" in run.data.metrics
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id, "drift_report")}
    assert {"drift_report/drift.csv", "drift_report/drift.png"} <= logged
    version = client.get_model_version(served.name, served.version)
    assert version.tags["monitoring.last_run_id"] == result.mlflow_run_id


def test_an_undrifted_stream_does_not_retrain(served: ServedModel, tmp_path: Path) -> None:
    start = _stream(served, traffic(date(2026, 2, 2), 1_000, drift=0.0))

    result = _check(served, tmp_path, start)

    assert result.status == "ok" and not result.retrain, result.reason
    assert "no drift" in result.reason
    assert result.summary["drifted_share"] < 0.3
    assert result.watermark["rowid"] > start and "last_trigger" not in result.watermark
    assert pd.read_csv(Path(result.report_dir) / "drift.csv")["psi"].max() < 0.2


def test_too_few_samples_say_so_keep_the_window_and_do_not_retrain(
    served: ServedModel, tmp_path: Path
) -> None:
    start = _stream(served, traffic(date(2026, 2, 3), 60, drift=1.0))

    result = _check(served, tmp_path, start)

    assert result.status == "insufficient_data" and not result.retrain
    assert "only 60 served rows" in result.reason and "at least 500" in result.reason
    assert result.watermark["rowid"] == start  # the next check reads these rows again
    assert (Path(result.report_dir) / "report.html").exists()


def test_cool_down_holds_back_a_second_trigger(served: ServedModel, tmp_path: Path) -> None:
    start = _stream(served, traffic(date(2026, 2, 4), 600, drift=1.0))
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    result = pipeline.check(
        MonitoringParams(cooldown_hours=6), {"version": served.version, "rowid": start,
                                             "last_trigger": recent},
        client=mlflow.MlflowClient(), request_log=served.log_path,
        labels_path=tmp_path / "labels.sqlite", reports_dir=tmp_path / "reports",
        model_name=served.name,
    )

    assert result.status == "drift" and not result.retrain
    assert "cool-down" in result.reason and result.watermark["last_trigger"] == recent


def test_nothing_to_watch_is_said_plainly(served: ServedModel, tmp_path: Path) -> None:
    client = mlflow.MlflowClient()
    common: dict[str, Any] = {"client": client, "labels_path": tmp_path / "labels.sqlite",
                              "reports_dir": tmp_path / "reports"}
    no_champion = pipeline.check(MonitoringParams(), None, request_log=served.log_path,
                                 model_name="never-registered", **common)
    assert no_champion.status == "no_champion" and not no_champion.retrain
    assert no_champion.watermark == {}
    no_log = pipeline.check(MonitoringParams(), None, request_log=tmp_path / "absent.sqlite",
                            model_name=served.name, **common)
    assert no_log.status == "insufficient_data" and not no_log.retrain
    assert "no request log at" in no_log.reason
    assert "CTCD_SERVER_REQUEST_LOG_SAMPLE_RATE" in no_log.reason


def test_drift_with_nothing_new_to_train_on_waits_for_data(served: ServedModel,
                                                          tmp_path: Path) -> None:
    start = _stream(served, traffic(date(2026, 2, 5), 800, drift=1.0))
    common: dict[str, Any] = {
        "client": mlflow.MlflowClient(), "request_log": served.log_path,
        "labels_path": tmp_path / "labels.sqlite", "reports_dir": tmp_path / "reports",
        "model_name": served.name}
    mark = {"version": served.version, "rowid": start}

    waiting = pipeline.check(MonitoringParams(cooldown_hours=0), mark, new_data=list, **common)

    assert waiting.status == "drift" and not waiting.retrain and waiting.waiting_for_data
    assert "drift seen; waiting for new data" in waiting.reason
    assert "last_trigger" not in waiting.watermark  # no cool-down consumed
    document = json.loads((Path(waiting.report_dir) / "drift.json").read_text())
    assert document["waiting_for_data"] is True and document["retrain"] is False

    landed = pipeline.check(MonitoringParams(cooldown_hours=0), mark,
                            new_data=lambda: [date(2026, 2, 6)], **common)
    assert landed.retrain and not landed.waiting_for_data
