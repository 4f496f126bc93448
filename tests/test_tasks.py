"""``ctcd.tasks``: verify's rollback against a real model server and a real MLflow registry.

The handle under test comes from a backend that is *not* the default one
(``CTCD_DEPLOYER`` names the static example, which knows no server), so a rollback that
asked the default backend instead of ``handle.backend`` would fail these tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException
from mlflow import MlflowClient
from tests.oracle import pyfunc_predictions

from ctcd.deployers import DeploymentConfig, ModelDeployer, get_deployer
from ctcd.errors import DeploymentError
from ctcd.services import ServiceHandle, ServiceStatus
from ctcd.stack.processes import free_port
from ctcd.tasks import roll_back_on_failure
from ctcd.tracking import CHAMPION

pytestmark = pytest.mark.e2e
LOCAL_BY_PATH = "ctcd.deployers.local:LocalDeployer"


@pytest.fixture
def backend_env(
    tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A private CTCD_HOME, free ports, and a default backend that is the wrong one."""
    home = tmp_path / "ctcd"
    low = free_port()
    monkeypatch.setenv("CTCD_HOME", str(home))
    monkeypatch.setenv("CTCD_SERVER_PORT_RANGE", json.dumps([low, min(low + 50, 65535)]))
    monkeypatch.setenv("CTCD_DEPLOYER", "ctcd.deployers.examples.static:StaticDeployer")
    monkeypatch.setenv("CTCD_STATIC_SERVERS", "{}")
    yield
    local = get_deployer("local")
    for handle in local.find_model_server():
        local.delete_model_server(handle.service_id, timeout=10, force=True)


def deploy(backend: ModelDeployer, model: Any) -> ServiceHandle:
    return backend.deploy_model(
        DeploymentConfig(model_name=model.name, model_uri=model.uri, model_version=model.version,
                         mlflow_run_id=model.run_id, dag_id="continuous_training",
                         run_id="manual__1", task_id="deploy"),
        strategy="replace", timeout=240,
    )


def fail_verification(handle: ServiceHandle, model: Any) -> str:
    registered = {"model_name": model.name, "version": model.version}
    with pytest.raises(AirflowFailException) as failed, roll_back_on_failure(handle, registered):
        raise DeploymentError("verification failed: 12% of holdout predictions differ.")
    return str(failed.value)


def test_failed_verification_puts_the_champion_back_into_the_same_server(
    backend_env: None, model_factory: Any, churn_model: Any
) -> None:
    champion = model_factory(name="churn-rollback", kind="logistic_regression")
    MlflowClient().set_registered_model_alias(champion.name, CHAMPION, champion.version)
    challenger = model_factory(name="churn-rollback", kind="logistic_regression")
    backend = get_deployer(LOCAL_BY_PATH)
    deploy(backend, champion)
    handle = deploy(backend, challenger)
    assert handle.backend == LOCAL_BY_PATH and handle.model_version == challenger.version

    message = fail_verification(handle, challenger)

    assert "verification failed" in message
    assert f"Rolled back: champion version {champion.version} is serving again" in message
    [now] = backend.find_model_server()
    assert (now.service_id, now.endpoint) == (handle.service_id, handle.endpoint)
    assert now.model_version == champion.version
    assert now.mlflow_run_id == champion.run_id  # lineage from the registry, not dropped
    assert (now.dag_id, now.task_id) == ("continuous_training", "deploy")
    described = backend.describe_model_server(handle.service_id)
    assert [(v.version, v.weight) for v in described.versions] == [(champion.version, 1.0)]
    rows = churn_model.example.to_dict(orient="records")  # both classes among the answers
    answer = httpx.post(f"{handle.endpoint}/invocations",
                        json={"dataframe_records": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == champion.version
    assert answer.json()["predictions"] == pyfunc_predictions(champion.uri, rows)


def test_failed_verification_without_a_champion_stops_the_server(
    backend_env: None, model_factory: Any
) -> None:
    first = model_factory(name="churn-no-champion", kind="logistic_regression")
    backend = get_deployer("local")
    handle = deploy(backend, first)
    assert handle.backend == "local" and handle.is_running()

    message = fail_verification(handle, first)

    assert "no champion to return to, so the model server was stopped" in message
    assert backend.status(handle.service_id) is ServiceStatus.UNREACHABLE
    assert not handle.is_running()
    assert backend.describe_model_server(handle.service_id).desired_state == "stopped"
