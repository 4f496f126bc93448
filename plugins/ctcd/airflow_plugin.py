"""The ctcd Airflow plugin: the deployments view inside the Airflow UI (a FastAPI app, a
navigation entry and a tab on DAG runs), the deploy task's extra links, and the listener
that keeps task logs readable.

Airflow loads this module from the plugins folder. Airflow imports *every* ``.py`` file
there under its bare file name, so no module in this package may be named like a top-level
package it imports (hence ``hooks/mlflow_tracking.py``, not ``hooks/mlflow.py``).
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from ctcd import listeners
from ctcd.operators.links import (
    APP_PREFIX,
    UI_ROUTE,
    DeploymentPageLink,
    MlflowRunLink,
    ModelServerLink,
)
from ctcd.operators.validation import DataDocsLink


class DeploymentsApp:
    """The pages' ASGI app, built on its first request: every Airflow component loads this
    plugin (scheduler, workers, each task), only the API server serves the pages."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from ctcd.ui.app import app

        await app()(scope, receive, send)


class CtcdPlugin(AirflowPlugin):
    name = "ctcd"
    listeners = [listeners]  # noqa: RUF012  (task logs without library warning floods)
    operator_extra_links = [DeploymentPageLink(), ModelServerLink(), MlflowRunLink(),  # noqa: RUF012
                            DataDocsLink()]
    fastapi_apps = [{"app": DeploymentsApp(), "url_prefix": APP_PREFIX,  # noqa: RUF012
                     "name": "Model deployments"}]
    external_views = [  # noqa: RUF012
        # Opens inside the UI at /plugin/deployments (deep links work), from the navigation.
        {"name": "Deployments", "href": f"{APP_PREFIX.lstrip('/')}/deployments",
         "destination": "nav", "url_route": UI_ROUTE, "category": "browse"},
        # A tab on every DAG run: what the run decided and deployed.
        {"name": "Deployment", "href": f"{APP_PREFIX.lstrip('/')}/runs/{{DAG_ID}}/{{RUN_ID}}",
         "destination": "dag_run", "url_route": f"{UI_ROUTE}_run"},
    ]
