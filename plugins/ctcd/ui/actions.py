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
from ctcd.deployers.scorers import scorers_of
from ctcd.deployers.shadow import summarize
from ctcd.deployers.traffic import NoRolloutInProgress
from ctcd.errors import CtcdError, DeploymentError, InvalidParams

log = logging.getLogger(__name__)

SERVER_ACTIONS = ("stop", "start", "rollback", "promote", "promote_shadow", "drop_shadow")
# what model_server_ops can do itself; the other actions are recorded with action "list"
OPS_ACTIONS = ("stop", "start", "rollback", "promote")
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
        return _end_shadow(deployer, target, action == "promote_shadow", timeout)
    if action in ("rollback", "promote"):
        _refuse_if_shadowed(deployer, target, action)
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


def _refuse_if_shadowed(deployer: ModelDeployer, target: str, action: str) -> None:
    """A shadow is no canary: rolling it back or promoting it as one would hide what it is
    (and a rollback with no rollout would redeploy an older version)."""
    shadow = deployer.describe_model_server(target).shadow
    if shadow is not None:
        raise NoRolloutInProgress(
            f"version {shadow.get('version')} is a shadow (it answers no client), not a "
            f"rollout: use promote_shadow to make it live, or drop_shadow to unload it; "
            f"nothing was changed by {action!r}")


def _end_shadow(deployer: ModelDeployer, target: str, promote: bool, timeout: float) -> str:
    """Promote the shadow (all traffic to it at once, the live versions unloaded: what the
    shadow strategy does when its analysis passes) or drop it (unloaded; the live version
    untouched), through the deployer's ``promote_model_server`` / ``rollback_model_server``,
    which end a version under trial on the server and record it, and end a ``shadow`` deploy
    still waiting for its analysis with that outcome. Its comparison at that moment is part
    of what is returned (and so of the recorded run)."""
    described = deployer.describe_model_server(target)
    shadow = described.shadow
    verb = "promote" if promote else "drop"
    if shadow is None:
        raise NoRolloutInProgress(
            f"model server {described.handle.server_name!r} runs no shadow now, so there is "
            f"no shadow to {verb} (it may have ended already: see its history)")
    version, live = str(shadow.get("version")), described.handle.model_version
    evidence = summarize(shadow.get("cumulative") or {})
    if promote:
        if not isinstance(deployer, SupportsPromotion):
            raise InvalidParams(f"the {deployer.name!r} backend cannot promote by hand")
        handle = deployer.promote_model_server(target, timeout=timeout)
        if handle.model_version != version:
            raise DeploymentError(
                f"promoting the shadow left version {handle.model_version} serving, not the "
                f"shadow version {version}; check the server's versions on its page")
        return (f"shadow version {version} promoted: it serves all traffic, version {live} "
                f"was unloaded. Its comparison then: {evidence}")
    if not isinstance(deployer, SupportsRollback):
        raise InvalidParams(f"the {deployer.name!r} backend cannot drop a shadow by hand")
    handle = deployer.rollback_model_server(target, timeout=timeout)
    return (f"shadow version {version} dropped (unloaded): version {handle.model_version} "
            f"serves as before. Its comparison then: {evidence}")


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
