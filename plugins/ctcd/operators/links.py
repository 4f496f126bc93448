"""Extra links on deploy tasks: the deployment's page in the Airflow UI, the model server and
the MLflow run of the deployed model.

Airflow 3 computes a link on the worker when the task finishes and stores it; the links read
the task's returned :class:`ctcd.services.ServiceHandle`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperatorLink

from ctcd.services.handle import ServiceHandle

log = logging.getLogger(__name__)


def _handle(ti_key: Any) -> ServiceHandle | None:
    pull = getattr(ti_key, "xcom_pull", None)
    if pull is None:  # only a key, not a running task instance: nothing to read
        return None
    value = pull(task_ids=ti_key.task_id, key="return_value")
    return value if isinstance(value, ServiceHandle) else None


# The deployments view inside the Airflow UI (ctcd.ui): its route and the plugin app's prefix.
UI_ROUTE = "deployments"
APP_PREFIX = "/ctcd"


def deployment_page_url(handle: ServiceHandle) -> str:
    """The deployment's page, opened inside the Airflow UI (``[api] base_url`` when set)."""
    from urllib.parse import quote

    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback=None) or "").rstrip("/")
    return (f"{base}/plugin/{UI_ROUTE}{APP_PREFIX}/deployments/"
            f"{quote(handle.service_id, safe='')}")


class DeploymentPageLink(BaseOperatorLink):
    """What the task deployed, on the deployments page: versions, traffic, health, the
    gate's decision, the history and the lineage."""

    name = "Deployment"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        handle = _handle(ti_key)
        return deployment_page_url(handle) if handle else ""


class ModelServerLink(BaseOperatorLink):
    name = "Model server"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        handle = _handle(ti_key)
        return f"{handle.endpoint}/v2/models/{handle.model_name}" if handle else ""


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        handle = _handle(ti_key)
        if handle is None or not handle.mlflow_run_id:
            return ""
        from mlflow.exceptions import MlflowException  # heavy: not at DAG parse time

        from ctcd.hooks.mlflow_tracking import MlflowHook

        try:
            return MlflowHook().run_url(handle.mlflow_run_id) or ""
        except MlflowException as err:
            log.warning("no MLflow run link for %s: %s", handle.mlflow_run_id, err)
            return ""
