"""The deployments page's actions: stop, start, roll back, promote, and for a shadow in
progress promote or drop the shadow, each through the deployer contract, then recorded as a
run of ``model_server_ops`` (who asked, what happened) so it sits in Airflow's audit trail
with every other change.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ctcd.deployers.base import ModelDeployer, SupportsPromotion, SupportsRollback
from ctcd.deployers.by_hand import end_shadow, refuse_if_shadowed
from ctcd.deployers.scorers import scorers_of
from ctcd.errors import CtcdError, InvalidParams

log = logging.getLogger(__name__)

SERVER_ACTIONS = ("stop", "start", "rollback", "promote", "promote_shadow", "drop_shadow")
# what model_server_ops can do itself; the other actions are recorded with action "list"
OPS_ACTIONS = ("stop", "start", "rollback", "promote", "promote_shadow", "drop_shadow")
SCORER_ACTIONS = ("stop", "start")
OPS_DAG = "model_server_ops"


@dataclass(frozen=True)
class Outcome:
    action: str
    target: str
    ok: bool
    message: str
    recorded_run: str | None = None
    status_code: int = 200

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "ok": self.ok,
                "message": self.message, "recorded_run": self.recorded_run}


def perform(deployer: ModelDeployer, kind: str, target: str, action: str, *,
            timeout: float = 120.0) -> str:
    """Do ``action`` on the server (or scorer) ``target`` (its id); returns what happened.
    Raises :class:`ctcd.errors.CtcdError` (with its HTTP status) when it cannot."""
    if kind == "scorer":
        return _scorer(deployer, target, action, timeout)
    if action not in SERVER_ACTIONS:
        raise InvalidParams(f"unknown action {action!r}; use one of {list(SERVER_ACTIONS)}")
    if action == "stop":
        deployer.stop_model_server(target, timeout=30, force=True)
        return "stopped (it keeps its id, port and version for start)"
    if action == "start":
        handle = deployer.start_model_server(target, timeout=timeout)
        return f"started: version {handle.model_version} answers at {handle.endpoint}"
    if action in ("promote_shadow", "drop_shadow"):
        return end_shadow(deployer, target, action == "promote_shadow", timeout)
    if action in ("rollback", "promote"):
        refuse_if_shadowed(deployer, target, action)
    if action == "rollback":
        if not isinstance(deployer, SupportsRollback):
            raise InvalidParams(f"the {deployer.name!r} backend keeps no deployment history, "
                                "so it cannot roll back; deploy the version you want instead")
        handle = deployer.rollback_model_server(target, timeout=timeout)
        return f"rolled back: version {handle.model_version} serves all traffic"
    if not isinstance(deployer, SupportsPromotion):
        raise InvalidParams(f"the {deployer.name!r} backend cannot promote a rollout by hand")
    handle = deployer.promote_model_server(target, timeout=timeout)
    return f"promoted: version {handle.model_version} serves all traffic"


def _scorer(deployer: ModelDeployer, name: str, action: str, timeout: float) -> str:
    scorers = scorers_of(deployer)
    if action == "stop":
        scorers.stop_scorer(name, timeout=60, force=True)
        return "stopped (unread requests wait in the stream)"
    if action == "start":
        info = scorers.start_scorer(name, timeout=timeout)
        return f"started: {len(info.replicas)} replica(s) read {info.config.stream!r}"
    raise InvalidParams(f"a streaming scorer can be stopped or started, not {action!r}")


def record(action: str, kind: str, target: str, name: str, model_name: str, user: str,
           outcome: str, message: str) -> str | None:
    """A run of ``model_server_ops`` that records the action (its ``recorded`` Param tells
    the DAG the change is already made, so it only lists the servers and logs the record);
    returns its run id, or None when it could not be recorded (logged)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import AirflowException
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    now = datetime.now(UTC)
    run_id = f"deployments_page__{action}__{now:%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:6]}"
    conf = {"action": action if kind == "server" and action in OPS_ACTIONS else "list",
            "service": target if kind == "server" else None, "model_name": model_name,
            "recorded": {"action": action, "kind": kind, "target": target, "name": name,
                         "by": user, "at": now.isoformat(), "outcome": outcome,
                         "message": message, "from": "the deployments page"}}
    note = f"**ctcd:** {action} of {kind} {name} by {user} from the deployments page: " \
           f"{outcome} ({message})."
    try:
        with create_session() as session:
            run = trigger_dag(OPS_DAG, triggered_by=DagRunTriggeredByType.UI,
                              triggering_user_name=user, run_id=run_id, conf=conf,
                              note=note[:1000], session=session)
    except (AirflowException, ValueError, CtcdError) as err:
        log.warning("could not record %s of %s as a %s run: %s", action, name, OPS_DAG, err)
        return None
    return run.run_id if run is not None else None
