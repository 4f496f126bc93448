"""A model server as the cluster records it, shared by ``deployment`` and ``kserve`` mode.

The cluster is the registry: a server is a Deployment (or an InferenceService) whose
labels and annotations hold the deployed config and its history (:mod:`.resources`), and
handles are rebuilt from them alone. This module reads those records and computes the
changes to them; the writes are the caller's (:class:`.cluster.Cluster` for a Deployment,
:class:`.kserve.KServe` for an InferenceService), so both modes keep one format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ctcd.deployers import options
from ctcd.deployers.base import DeploymentConfig, DeploymentEvent
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes.api import Change
from ctcd.errors import DeploymentError, ServerStartFailed
from ctcd.services.handle import ServiceHandle

BACKEND = "kubernetes"
STOP = "serving.kserve.io/stop"  # KServe's annotation of a stopped InferenceService


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Server:
    """One model server as the cluster describes it (a Deployment or an InferenceService)."""

    kind: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])

    @property
    def annotations(self) -> dict[str, str]:
        return self.obj["metadata"].get("annotations") or {}

    @property
    def config(self) -> DeploymentConfig:
        return DeploymentConfig.from_dict(json.loads(self.annotations[res.CONFIG]))

    @property
    def replicas(self) -> int:
        if self.kind == "InferenceService":
            return 0 if self.annotations.get(STOP) == "true" else 1
        return int(self.obj.get("spec", {}).get("replicas", 1))

    def history(self) -> list[dict[str, Any]]:
        return list(json.loads(self.annotations.get(res.HISTORY, "[]")))

    def image(self) -> str:
        spec = self.obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("predictor") or {}
        containers = pod.get("containers") or [{}]
        return str(containers[0].get("image", ""))


def handle(server: Server, endpoint: str) -> ServiceHandle:
    config = server.config
    return ServiceHandle(
        service_id=server.uid, backend=BACKEND, server_name=config.server_name,
        model_name=config.model_name, model_version=config.model_version,
        model_uri=config.model_uri, endpoint=endpoint,
        dag_id=config.dag_id, run_id=config.run_id, task_id=config.task_id,
        mlflow_run_id=config.mlflow_run_id, strategy=server.annotations.get(res.STRATEGY),
        deployed_at=server.annotations.get(res.DEPLOYED_AT),
    )


def check_owned(server: Server, config: DeploymentConfig, namespace: str) -> None:
    labels = server.obj["metadata"].get("labels") or {}
    if labels.get(res.MANAGED_BY) != "ctcd" or res.CONFIG not in server.annotations:
        raise DeploymentError(
            f"{server.kind} {namespace}/{server.name} exists but was not created by ctcd; "
            f"deploy {config.server_name!r} under another server name or remove it"
        )


def prediction_token(config: DeploymentConfig) -> str | None:
    """The prediction token for the server's Secret (never recorded elsewhere): the
    deploying process's ``CTCD_SERVER_TOKEN`` when the server requires one."""
    if not config.requires_token:
        return None
    token = os.environ.get(options.TOKEN_VARIABLE)
    if not token:
        raise ServerStartFailed(
            f"model server {config.server_name!r} answers only requests with a bearer "
            f"token, and none is stored outside its Secret: set {options.TOKEN_VARIABLE} "
            "in the environment that deploys it"
        )
    return token


def event(
    config: DeploymentConfig, strategy: str, outcome: str, started_at: str,
    message: str | None = None, seconds_to_serving: float | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    return {"config": config.to_dict(), "strategy": strategy, "outcome": outcome,
            "started_at": started_at, "finished_at": utcnow(),
            "message": message[:500] if message else None,
            "seconds_to_serving": seconds_to_serving,
            "notes": [note[:300] for note in notes][-12:]}  # annotations are small


def to_event(data: dict[str, Any]) -> DeploymentEvent:
    return DeploymentEvent(
        config=DeploymentConfig.from_dict(data["config"]), strategy=data["strategy"],
        outcome=data["outcome"], started_at=data["started_at"],
        finished_at=data["finished_at"], message=data.get("message"),
        seconds_to_serving=data.get("seconds_to_serving"),
        notes=tuple(data.get("notes") or ()),
    )


def record(
    config: DeploymentConfig, strategy: str, event_strategy: str, outcome: str,
    started_at: str, *, message: str | None = None, deployed: bool = False,
    seconds_to_serving: float | None = None, replace_last: bool = False,
    notes: Sequence[str] = (),
) -> Change:
    """The change that appends an outcome to a server's history annotation; a deployed
    config also becomes the server's config, labels and strategy (one patch, for
    ``Kube.update`` to send with the resourceVersion it was computed from)."""
    entry = event(config, event_strategy, outcome, started_at, message, seconds_to_serving,
                  notes)

    def change(current: dict[str, Any]) -> dict[str, Any]:
        name = current["metadata"]["name"]
        notes = current["metadata"].get("annotations") or {}
        history = json.loads(notes.get(res.HISTORY, "[]"))
        history = [entry, *(history[1:] if replace_last else history)][:res.HISTORY_LIMIT]
        patch: dict[str, Any] = {"metadata": {"annotations": {
            res.HISTORY: json.dumps(history),
            res.LAST_ERROR: message[:2000] if message else None,
        }}}
        if deployed:
            patch["metadata"]["annotations"].update({
                res.CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                res.STRATEGY: strategy, res.DEPLOYED_AT: utcnow(),
            })
            patch["metadata"]["labels"] = res.labels(name, config)
        return patch

    return change
