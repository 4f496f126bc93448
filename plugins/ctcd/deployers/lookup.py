"""Finding service handles again from outside the task that deployed them."""

from __future__ import annotations

import dataclasses

from ctcd.deployers.base import DeploymentConfig, ModelDeployer
from ctcd.deployers.registry import get_deployer
from ctcd.errors import InvalidParams, ModelServerNotFound
from ctcd.services.handle import ServiceHandle


def load_last_service(
    dag_id: str,
    task_id: str,
    *,
    running: bool = False,
    model_name: str | None = None,
    deployer: str | None = None,
) -> ServiceHandle:
    """The newest model server last deployed by ``dag_id.task_id`` (optionally only a running
    one) on backend ``deployer`` (default ``CTCD_DEPLOYER``). Raises
    :class:`ctcd.errors.ModelServerNotFound` if there is none."""
    found = get_deployer(deployer).find_model_server(
        dag_id=dag_id, task_id=task_id, running=running, model_name=model_name
    )
    if not found:
        state = "running " if running else ""
        raise ModelServerNotFound(f"no {state}model server deployed by task {dag_id}.{task_id}")
    return found[0]


def config_for_version(deployer: ModelDeployer, service_id: str, version: str,
                       model_uri: str | None = None) -> DeploymentConfig:
    """The server's last deployed config with another version of its model (``models:/<model
    name>/<version>`` unless ``model_uri`` is given): what ``model_server_ops`` and ``ctcd
    models shadow`` deploy to try a registered version against the serving one."""
    if not version.strip():
        raise InvalidParams("give the registered version to deploy (model_version)")
    described = deployer.describe_model_server(service_id)
    recorded = next((e.config for e in described.history if e.outcome == "succeeded"), None)
    if recorded is None:
        raise InvalidParams(
            f"server {described.handle.server_name} has no successful deployment recorded "
            "to start from; deploy a version with deploy_model first")
    return dataclasses.replace(
        recorded, model_version=version,
        model_uri=model_uri or f"models:/{recorded.model_name}/{version}",
        mlflow_run_id=None, dag_id=None, run_id=None, task_id=None)
