"""The MLflow model registry: register accepted versions and move the aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

CHALLENGER = "challenger"
CHAMPION = "champion"


def register(
    model_uri: str, model_name: str, *, run_id: str, tags: Mapping[str, str] | None = None
) -> str:
    """Register ``model_uri`` as a new version of ``model_name``, aliased ``challenger``.

    Idempotent for a retried task: a version already registered from the same run is reused.
    """
    client = mlflow.MlflowClient()
    existing: list[Any]
    try:
        existing = list(
            client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        )
    except MlflowException:
        existing = []
    if existing:
        version = str(max(int(mv.version) for mv in existing))
    else:
        version = str(mlflow.register_model(model_uri, model_name, tags=dict(tags or {})).version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version


def champion_version(model_name: str) -> str | None:
    client = mlflow.MlflowClient()
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def promote(model_name: str, version: str) -> None:
    """Make ``version`` the champion (the version the serving endpoint answers with)."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, CHAMPION, version)
    try:
        challenger = client.get_model_version_by_alias(model_name, CHALLENGER)
    except MlflowException:
        return
    if str(challenger.version) == version:
        client.delete_registered_model_alias(model_name, CHALLENGER)
