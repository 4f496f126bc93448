"""Glue between the project's errors and Airflow task semantics.

A bad parameter or bad data will be just as bad on the next try, so those fail the task
at once instead of burning its retries; a failed verification rolls the endpoint back to
the champion before the task fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ctcd.errors import DataValidationError, DeploymentError, InvalidParams

FINAL_ERRORS: tuple[type[Exception], ...] = (InvalidParams, DataValidationError, DeploymentError)


@contextmanager
def fail_without_retry(errors: tuple[type[Exception], ...] = FINAL_ERRORS) -> Iterator[None]:
    """Turn ``errors`` (default: bad params, bad data, failed deploy) into a final failure."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except errors as err:
        raise AirflowFailException(str(err)) from err


@contextmanager
def roll_back_on_failure(handle: Any, registered: Mapping[str, Any]) -> Iterator[None]:
    """If verification fails, put the champion back on the endpoint, then fail the task.

    With no champion yet, the unverified version must not keep answering: its server is
    stopped instead.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from ctcd.deployers import DeploymentConfig, get_deployer
    from ctcd.tracking import get_tracking

    try:
        yield
    except DeploymentError as err:
        deployer = get_deployer()
        champion = get_tracking().champion_version(registered["model_name"])
        if champion is None or champion == str(registered["version"]):
            deployer.stop_model_server(handle.service_id, timeout=60, force=True)
            outcome = "no champion to return to, so the model server was stopped"
        else:
            config = DeploymentConfig(
                model_name=registered["model_name"],
                model_uri=f"models:/{registered['model_name']}/{champion}",
                model_version=champion,
                dag_id=handle.dag_id,
                run_id=handle.run_id,
                task_id=handle.task_id,
            )
            deployer.deploy_model(config, strategy="replace", timeout=300)
            outcome = f"champion version {champion} is serving again"
        raise AirflowFailException(f"{err.message} Rolled back: {outcome}.") from err
