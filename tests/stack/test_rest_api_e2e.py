"""The embedded stack for real: Airflow 3 (api-server, scheduler, dag-processor, triggerer)
and MLflow as processes in a temporary home, driven only through the REST API v2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ctcd.settings import PROJECT_ROOT, Settings
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import Ports, Stack
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.e2e
DAG_ID = "continuous_training"
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    stack = Stack(home=home, ports=Ports(airflow=free_port(), mlflow=free_port()))
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        _stop_model_servers(home)
        stack.down()
        assert all(pid is None for pid in stack.status().values())


def _stop_model_servers(home: Path) -> None:
    from ctcd.deployers.local.deployer import LocalDeployer

    deployer = LocalDeployer(Settings(home=home))
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=30, force=True)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[AirflowClient]:
    client = AirflowClient(stack.airflow_url, ADMIN_USER, ADMIN_PASSWORD)
    client.wait_for_dag(DAG_ID)
    client.set_paused(DAG_ID, False)
    yield client
    client.close()


def test_token_is_required(stack: Stack) -> None:
    response = httpx.get(f"{stack.airflow_url}/api/v2/dags/{DAG_ID}")
    assert response.status_code == 401


def test_triggered_run_with_conf_override_trains_deploys_and_serves(
    client: AirflowClient, stack: Stack
) -> None:
    from datetime import UTC, datetime

    from ctcd.data.producer import produce
    from ctcd.data.spec import load_spec

    landing = f"file://{stack.home / 'landing' / 'churn'}/"
    produce(datetime.now(UTC).date(), 4_000, spec=load_spec("churn"), landing_uri=landing)
    run = client.trigger(
        DAG_ID,
        {
            "model_type": "logistic_regression",
            "min_roc_auc": 0.7,
            "strategy": "replace",
        },
    )
    assert run["conf"]["model_type"] == "logistic_regression"
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=900)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run["dag_run_id"])}
    assert final["state"] == "success", states

    handle = client.xcom(DAG_ID, run["dag_run_id"], "deploy")
    data = handle["__data__"]
    assert handle["__classname__"] == "ctcd.services.handle.ServiceHandle"
    assert data["run_id"] == run["dag_run_id"] and data["task_id"] == "deploy"
    response = httpx.post(f"{data['endpoint']}/invocations", content=EXAMPLE_REQUEST.read_bytes(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and set(predictions) <= {0, 1}
    assert response.headers["X-Model-Version"] == data["model_version"]

    trained = client.xcom(DAG_ID, run["dag_run_id"], "train")
    assert trained["metrics"]["holdout_roc_auc"] >= 0.7


def test_out_of_range_param_is_refused_at_trigger_naming_it(client: AirflowClient) -> None:
    response = client.request(
        "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"min_roc_auc": 7}}
    )
    assert response.status_code == 400
    assert "min_roc_auc" in response.text


def test_unknown_param_fails_the_first_task_naming_it(client: AirflowClient, stack: Stack) -> None:
    from ctcd.deployers.local.deployer import LocalDeployer

    before = [h.model_version for h in LocalDeployer(Settings(home=stack.home)).find_model_server()]
    run = client.trigger(DAG_ID, {"min_roc_aucc": 0.9})
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=600)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run["dag_run_id"])}
    assert final["state"] == "failed"
    assert states["ingest"] == "failed"
    assert states["train"] == "upstream_failed" and states["deploy"] == "upstream_failed"
    log = client.task_log(DAG_ID, run["dag_run_id"], "ingest")
    assert "unknown parameter 'min_roc_aucc'" in log
    after = [h.model_version for h in LocalDeployer(Settings(home=stack.home)).find_model_server()]
    assert after == before
