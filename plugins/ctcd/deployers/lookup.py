"""Finding service handles again from outside the task that deployed them."""

from __future__ import annotations

from ctcd.deployers.registry import get_deployer
from ctcd.errors import ModelServerNotFound
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
