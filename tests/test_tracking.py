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
