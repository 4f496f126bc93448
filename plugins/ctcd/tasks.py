"""Glue between the project's errors and Airflow task semantics.

A bad parameter or bad data will be just as bad on the next try, so those fail the task
at once instead of burning its retries; a failed verification rolls the endpoint back to
the champion before the task fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctcd.errors import (
    CtcdError,
    DataValidationError,
    DeploymentError,
    InvalidParams,
    TrainingError,
)

if TYPE_CHECKING:
    from ctcd.services.handle import ServiceHandle

FINAL_ERRORS: tuple[type[Exception], ...] = (
    InvalidParams, DataValidationError, TrainingError, DeploymentError,
)


@contextmanager
def fail_without_retry(errors: tuple[type[Exception], ...] = FINAL_ERRORS) -> Iterator[None]:
    """Turn ``errors`` (default: bad params, bad data, a failed trainer, a failed deploy) into
    a final failure."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except errors as err:
        raise AirflowFailException(str(err)) from err


@contextmanager
def roll_back_on_failure(handle: ServiceHandle, registered: Mapping[str, Any]) -> Iterator[None]:
    """If verification fails, put the champion back on the endpoint, then fail the task.

    The rollback goes through the backend that deployed ``handle`` (``handle.backend``), into
    the same server, with the champion's registry lineage (its MLflow run id). With no
    champion yet, the unverified version must not keep answering: its server is stopped
    instead. Either way the task fails at once (no retry) with a message saying what now
    serves; if the rollback itself fails, the message says that too.
    """
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except DeploymentError as err:
        try:
            outcome = roll_back(handle, str(registered["model_name"]), str(registered["version"]))
        except CtcdError as failed:
            raise AirflowFailException(
                f"{err.message} The rollback failed too: {failed.message}"
            ) from err
        raise AirflowFailException(f"{err.message} Rolled back: {outcome}.") from err


def roll_back(handle: ServiceHandle, model_name: str, version: str) -> str:
    """Put the registry's champion of ``model_name`` back on the server of ``handle``
    (through the backend that deployed it), or stop the server when ``version`` has no
    champion to return to; returns what now serves."""
    from ctcd.deployers import DeploymentConfig, get_deployer

    deployer = get_deployer(handle.backend)
    champion = _champion(model_name)
    if champion is None or champion.version == version:
        deployer.stop_model_server(handle.service_id, timeout=60, force=True)
        return "no champion to return to, so the model server was stopped"
    config = DeploymentConfig(
        model_name=model_name,
        model_uri=f"models:/{model_name}/{champion.version}",
        model_version=champion.version,
        mlflow_run_id=champion.run_id,
        dag_id=handle.dag_id,
        run_id=handle.run_id,
        task_id=handle.task_id,
        server=handle.server_name,
    )
    deployer.deploy_model(config, strategy="replace", timeout=300)
    return f"champion version {champion.version} is serving again"


@dataclass(frozen=True)
class _Champion:
    version: str
    run_id: str | None


def _champion(model_name: str) -> _Champion | None:
    """The registry's champion of ``model_name`` (version and the run that made it)."""
    from mlflow.exceptions import MlflowException

    from ctcd.deployers import redact_uri
    from ctcd.tracking import CHAMPION, get_tracking

    client = get_tracking().client
    try:
        found = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model, or no champion alias yet
        raise DeploymentError(
            f"could not read the champion of {model_name!r} from the MLflow registry at "
            f"{redact_uri(client.tracking_uri)} ({err.message}); the unverified version "
            "still serves"
        ) from err
    return _Champion(str(found.version), found.run_id or None)


def end_held_shadow(handle: ServiceHandle, version: str, *, promote: bool) -> str:
    """End the shadow of ``version`` that a deploy left running for a person (outcome
    ``held``) on the server of ``handle``, as the deployments page and ``model_server_ops``
    do (:func:`ctcd.deployers.by_hand.end_shadow`): promote it to live (all traffic, the
    live version unloaded) or drop it (unloaded; the live version untouched). Returns what
    happened. A shadow someone already ended (e.g. on the deployments page) is left as it
    is."""
    from ctcd.deployers import get_deployer
    from ctcd.deployers.by_hand import end_shadow

    deployer = get_deployer(handle.backend)
    described = deployer.describe_model_server(handle.service_id)
    shadow = described.shadow
    if shadow is None or str(shadow.get("version")) != version:
        return (f"the shadow of version {version} had already ended; version "
                f"{described.handle.model_version} serves")
    return end_shadow(deployer, handle.service_id, promote, timeout=120)
