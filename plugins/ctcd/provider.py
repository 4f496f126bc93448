"""Provider metadata: makes Airflow list the project's connection types (the model server
and MLflow) in the connection form, with their field labels.

Found through the ``apache_airflow_provider`` entry point declared in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

from ctcd import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "ctcd",
        "name": "ctcd",
        "description": "Continuous training and deployment of ML models: model servers, "
                       "deployers and MLflow.",
        "versions": [__version__],
        "connection-types": [
            {
                "hook-class-name": "ctcd.hooks.model_server.ModelServerHook",
                "hook-name": "ctcd model server",
                "connection-type": "ctcd_model_server",
                "conn-fields": {
                    "model_name": {
                        "label": "Model name",
                        "schema": {"type": ["string", "null"]},
                        "description": "The served model (headers, V2 routes).",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "description"],
                    "relabeling": {"password": "Bearer token", "schema": "Scheme (http/https)"},
                    "placeholders": {"host": "127.0.0.1", "port": "8100", "schema": "http"},
                },
            },
            {
                "hook-class-name": "ctcd.hooks.mlflow_tracking.MlflowHook",
                "hook-name": "MLflow",
                "connection-type": "mlflow",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password", "extra"],
                    "relabeling": {"schema": "Scheme (http/https)"},
                    "placeholders": {"host": "127.0.0.1", "port": "5000", "schema": "http"},
                },
            },
        ],
    }
