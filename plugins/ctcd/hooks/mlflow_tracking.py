"""MLflow tracking server connection: hands out an ``MlflowClient`` and UI links."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from mlflow import MlflowClient

from ctcd.settings import get_settings


class MlflowHook(BaseHook):
    """Connection type ``mlflow`` (host, port, schema); without that connection the project's
    tracking URI (``CTCD_MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_URI``) is used."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def tracking_uri(self) -> str:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return get_settings().tracking_uri()
        port = f":{conn.port}" if conn.port else ""
        return f"{conn.schema or 'http'}://{conn.host}{port}"

    @cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri)

    def get_conn(self) -> MlflowClient:
        return self.client

    def run_url(self, run_id: str) -> str | None:
        """The tracking UI page of ``run_id`` (None when the store has no UI, e.g. SQLite)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
