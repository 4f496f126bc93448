"""Ending a rollout by hand: promote the new version, or drop it, on a live server.

A rollout in progress shows on the server itself: a version is loaded beside the one the
backend records as serving (a canary at some weight, a blue/green version under
verification). These two steps act on the server's admin API only, so a backend calls them
whether or not the deploy that started the rollout is still running: that deploy's strategy
sees the change within a second and ends with it (:func:`ctcd.deployers.rollout.taken_over`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ctcd.deployers.admin import VersionStats
from ctcd.deployers.base import DeploymentConfig
from ctcd.errors import InvalidParams


class Admin(Protocol):
    """The admin API of one server (``AdminClient``) or of all its pods (``PodsAdmin``)."""

    def versions(self) -> dict[str, VersionStats]: ...

    def set_traffic(self, weights: dict[str, float]) -> None: ...

    def unload(self, version: str) -> None: ...


class NoRolloutInProgress(InvalidParams):
    """There is no new version beside the serving one to promote or drop."""

    status_code = 409


@dataclass(frozen=True)
class Candidate:
    """The version under trial on a server, beside the ``serving`` one."""

    version: str
    model_uri: str
    weight: float
    serving: str


Action = Callable[[Admin, str, str], Candidate]
"""``promote`` or ``drop``: (admin API, the recorded serving version, the server's name)."""


def candidate(versions: Mapping[str, VersionStats], serving: str) -> Candidate | None:
    """The newest loaded version other than ``serving`` (the recorded one), if any."""
    others = [v for v in versions.values() if v.version != serving]
    if not others:
        return None
    newest = max(others, key=lambda v: _order(v.version))
    return Candidate(newest.version, newest.model_uri, newest.weight, serving)


def promote(admin: Admin, serving: str, server: str) -> Candidate:
    """Give the version under trial all traffic, then unload every other version."""
    found = candidate(admin.versions(), serving)
    if found is None:
        raise NoRolloutInProgress(
            f"model server {server!r} has no rollout in progress: version {serving} alone is "
            "loaded, so there is nothing to promote"
        )
    admin.set_traffic({found.version: 1.0})
    for version in admin.versions():
        if version != found.version:
            admin.unload(version)
    return found


def drop(admin: Admin, serving: str, server: str) -> Candidate:
    """Send all traffic back to ``serving`` and unload the version under trial."""
    versions = admin.versions()
    found = candidate(versions, serving)
    if found is None:
        raise NoRolloutInProgress(
            f"model server {server!r} has no rollout in progress to drop")
    if serving not in versions:
        raise NoRolloutInProgress(
            f"model server {server!r} does not hold its recorded version {serving} any more "
            f"(it serves {', '.join(sorted(versions))}); roll back to a version from its "
            "history instead")
    admin.set_traffic({serving: 1.0})
    for version in versions:
        if version != serving:
            admin.unload(version)
    return found


def promoted_config(serving: DeploymentConfig, found: Candidate) -> DeploymentConfig:
    """What a backend records for a version promoted by hand with no deploy running (a
    deploy that ended with it records its own config): its model, the rest of the serving
    config; the lineage of a version that no deploy finished is unknown."""
    return replace(serving, model_version=found.version, model_uri=found.model_uri,
                   mlflow_run_id=None, dag_id=None, run_id=None, task_id=None)


def message(action: Action, found: Candidate) -> str:
    if action is promote:
        return f"version {found.version} promoted by hand; it serves all traffic"
    return (f"version {found.version} dropped by hand; version {found.serving} serves all "
            "traffic")


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
