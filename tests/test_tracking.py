"""``Tracking.active`` points MLflow's process-wide state at one server for a block and puts
all of it back: the fluent globals and the environment variables ``mlflow.set_*_uri``
export for subprocesses. Nothing here is contacted (URIs are only resolved)."""

from __future__ import annotations

import os

import mlflow
import pytest

from ctcd.tracking import Tracking

OURS = "http://127.0.0.1:5999"
OTHER = "http://127.0.0.1:5998"


@pytest.fixture(autouse=True)
def _restore_mlflow_globals(monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", OURS)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def test_the_block_uses_the_server_and_leaves_no_registry_uri_behind() -> None:
    with Tracking(OTHER).active():
        assert mlflow.get_tracking_uri() == OTHER
        assert mlflow.get_registry_uri() == OTHER
        assert os.environ["MLFLOW_REGISTRY_URI"] == OTHER  # what a subprocess would inherit
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert os.environ["MLFLOW_TRACKING_URI"] == OURS
    assert mlflow.get_tracking_uri() == OURS
    assert mlflow.get_registry_uri() == OURS  # follows the tracking URI again


def test_a_registry_uri_set_before_is_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:5997")
    with Tracking(OTHER).active():
        assert mlflow.get_registry_uri() == OTHER
    assert os.environ["MLFLOW_REGISTRY_URI"] == "http://127.0.0.1:5997"
    assert mlflow.get_registry_uri() == "http://127.0.0.1:5997"


def test_no_tracking_uri_before_means_none_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with Tracking(OTHER).active():
        assert os.environ["MLFLOW_TRACKING_URI"] == OTHER
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() != OTHER


def test_an_experiment_and_run_named_by_the_environment_are_not_used_inside(
        monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> None:
    """A task inherits MLFLOW_EXPERIMENT_ID from whoever started Airflow (a shell, or a
    process that called mlflow.set_experiment() against another server): inside the block it
    named an experiment this server does not have, and every run started there failed."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ctcd-tracking-env") or None
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment("ctcd-tracking-env"))
    parent = client.create_run(experiment_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "987654321")  # another server's
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef")
    with Tracking(mlflow_server).active():
        assert "MLFLOW_EXPERIMENT_ID" not in os.environ
        assert "MLFLOW_RUN_ID" not in os.environ
        with mlflow.start_run(run_id=parent.info.run_id), mlflow.start_run(
                run_name="nested", nested=True) as child:
            mlflow.set_tag("ctcd.test", "env")
    assert client.get_run(child.info.run_id).data.tags["ctcd.test"] == "env"
    assert os.environ["MLFLOW_EXPERIMENT_ID"] == "987654321"  # put back after the block
    assert os.environ["MLFLOW_RUN_ID"] == "0123456789abcdef"
