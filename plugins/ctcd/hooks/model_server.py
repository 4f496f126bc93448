"""A model-server connection (host, port, token) for tasks that call a server directly."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import httpx
from airflow.sdk import BaseHook

from ctcd.services.handle import PredictInput, ServiceHandle


class ModelServerHook(BaseHook):
    """Connection type ``ctcd_model_server``: host, port, ``schema`` (http/https, default
    http), password = bearer token for predictions (optional), extra ``{"model_name": ...}``.

    Define it like any connection, e.g.
    ``AIRFLOW_CONN_CHURN_SERVER='ctcd-model-server://:TOKEN@127.0.0.1:8100?model_name=churn'``.
    """

    conn_name_attr = "model_server_conn_id"
    default_conn_name = "ctcd_model_server_default"
    conn_type = "ctcd_model_server"
    hook_name = "ctcd model server"

    def __init__(self, model_server_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_server_conn_id = model_server_conn_id

    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.model_server_conn_id)

    @property
    def endpoint(self) -> str:
        conn = self.connection
        scheme = conn.schema or "http"
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{conn.host}{port}"

    @property
    def token(self) -> str | None:
        return self.connection.password or None

    def get_conn(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.endpoint, headers=headers, timeout=30.0)

    def handle(self, model_name: str | None = None) -> ServiceHandle:
        """A handle for the served model (name from the argument or the connection extra)."""
        name = model_name or self.connection.extra_dejson.get("model_name")
        if not name:
            raise ValueError(
                f"connection {self.model_server_conn_id!r} names no model; pass model_name or "
                "set extra {'model_name': ...}"
            )
        return ServiceHandle(
            service_id=self.model_server_conn_id, backend="connection", server_name=name,
            model_name=name, model_version="", model_uri="", endpoint=self.endpoint,
        )

    def predict(self, data: PredictInput, model_name: str | None = None) -> list[Any]:
        return self.handle(model_name).predict(data, token=self.token)
