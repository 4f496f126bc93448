"""The connection types in Airflow's connection form, and the hooks against live servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from tests.oracle import pyfunc_predictions

from ctcd.errors import PredictionFailed
from ctcd.hooks.mlflow_tracking import MlflowHook
from ctcd.hooks.model_server import ModelServerHook
from ctcd.stack.processes import free_port, stop_process_tree, wait_http

TOKEN = "predict-token"


def test_connection_types_are_in_the_connection_form(airflow_home: Any) -> None:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    forms = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    server = forms["ctcd_model_server"]
    assert server.hook_class_name == "ctcd.hooks.model_server.ModelServerHook"
    assert server.standard_fields is not None
    assert server.standard_fields.password.title == "Bearer token"
    assert server.standard_fields.login.hidden
    assert server.extra_fields is not None and "model_name" in server.extra_fields
    assert forms["mlflow"].hook_class_name == "ctcd.hooks.mlflow_tracking.MlflowHook"


@pytest.fixture(scope="module")
def served(churn_model: Any, mlflow_server: str) -> Iterator[str]:
    """A model server that requires a bearer token on predictions."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "CTCD_SERVER_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctcd.serving", "--model-uri", churn_model.uri,
         "--model-name", churn_model.name, "--model-version", churn_model.version,
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, process=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_tree(proc.pid)


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_model_server_hook_predicts_with_the_connection_token(
    served: str, churn_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(served.rsplit(":", 1)[1])
    _connection(monkeypatch, "churn_server", conn_type="ctcd_model_server", host="127.0.0.1",
                port=port, password=TOKEN, extra={"model_name": churn_model.name})
    hook = ModelServerHook("churn_server")
    assert hook.endpoint == served
    rows = churn_model.example  # both classes among its answers
    assert hook.predict(rows) == pyfunc_predictions(churn_model.uri, rows)
    with hook.get_conn() as client:
        assert client.get("/v2/health/ready").status_code == 200

    _connection(monkeypatch, "wrong_token", conn_type="ctcd_model_server", host="127.0.0.1",
                port=port, password="not-the-token")
    with pytest.raises(PredictionFailed, match="401"):
        ModelServerHook("wrong_token").predict(rows, model_name=churn_model.name)
    with pytest.raises(ValueError, match="names no model"):
        ModelServerHook("wrong_token").predict(rows)


def test_mlflow_hook_uses_the_connection_or_the_project_setting(
    mlflow_server: str, churn_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = mlflow_server.removeprefix("http://").split(":")
    _connection(monkeypatch, "tracking", conn_type="mlflow", host=host, port=int(port))
    hook = MlflowHook("tracking")
    assert hook.tracking_uri == mlflow_server
    version = hook.client.get_model_version(churn_model.name, churn_model.version)
    assert version.run_id == churn_model.run_id
    url = hook.run_url(churn_model.run_id)
    assert url is not None and url.startswith(f"{mlflow_server}/#/experiments/")
    assert url.endswith(f"/runs/{churn_model.run_id}")

    monkeypatch.setenv("CTCD_MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert MlflowHook("no_such_connection").tracking_uri == "http://127.0.0.1:5999"
