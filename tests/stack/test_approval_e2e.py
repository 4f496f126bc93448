"""Human approval before promotion with the real scheduler: the embedded stack (Airflow 3's
api-server, scheduler, dag-processor and triggerer, MLflow) runs a training DAG generated
from a model file of the test's own with ``deployment.approval: true``; every answer is
given over the REST API v2 (``PATCH .../hitlDetails``, as the UI's Required Actions does),
and what serves is asked of the real model server (its ``X-Model-Version`` header).

In order, on one stack (the runs build on each other): the first run waits in
``awaiting_input`` and an approval promotes it; a second run's version, deployed and
verified, is rejected and the champion serves again; a third gets no answer, and the
scheduler's response-timeout sweep applies the default answer, Reject, with the same
result. Each run's note says the gate's decision and the answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from tests.stack.support import stop_model_servers

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.settings import PROJECT_ROOT
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import Ports, Stack
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.e2e
KEY = "approval"  # the model file's name: its training DAG is approval_training
DAG_ID = f"{KEY}_training"
MODEL = "churn-approval-e2e"
ANSWER_AFTER = 5.0  # seconds between the question and the answer
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"
MODEL_FILE = {
    "name": MODEL,
    "dataset": "churn",
    "trainer": {"estimator": "logistic_regression", "hyperparameters": {"max_iter": 300}},
    "gate": {"metric": "roc_auc", "threshold": 0.6},
    "deployment": {"strategy": "replace", "approval": True},
    "schedule": {"on_new_data": False, "cron": None},  # runs only when the test triggers them
    "monitoring": {"enabled": False},
    "batch": {"enabled": False},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("approval-stack")
    models = home / "models"
    models.mkdir()
    (models / f"{KEY}.yaml").write_text(yaml.safe_dump(MODEL_FILE, sort_keys=False))
    stack = Stack(home=home, ports=Ports(airflow=free_port(), mlflow=free_port()))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CTCD_MODELS_DIR", str(models))  # the stack's processes inherit it
        try:
            stack.up(timeout=300)
            produce(datetime.now(UTC).date(), 2_000, spec=load_spec("churn"),
                    landing_uri=f"file://{home / 'landing' / 'churn'}/")
            yield stack
        finally:
            stop_model_servers(home)
            stack.down()
            assert all(pid is None for pid in stack.status().values())


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[AirflowClient]:
    client = AirflowClient(stack.airflow_url, ADMIN_USER, ADMIN_PASSWORD)
    client.wait_for_dag(DAG_ID)
    client.set_paused(DAG_ID, False)
    yield client
    client.close()


def _awaiting(client: AirflowClient, run_id: str, timeout: float = 600) -> dict[str, Any]:
    """Wait until the run's approval step asks; returns its HITL detail."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.dag_run(DAG_ID, run_id)
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run_id)}
        assert run["state"] in ("queued", "running"), (run["state"], states)
        if states.get("approve") == "awaiting_input":
            response = client.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails")
            response.raise_for_status()
            [detail] = response.json()["hitl_details"]
            assert run["state"] == "running"
            return dict(detail)
        assert time.monotonic() < deadline, f"the approval was never asked: {states}"
        time.sleep(2)


def _answer(client: AirflowClient, run_id: str, answer: str) -> None:
    """Answer as a person would: not within the second the question appears. (Airflow
    3.3.2's scheduler fails a task answered before it has processed the executor's report
    that the asking workload exited: "finished with state success, but the task instance's
    state attribute is queued", then retries it, asking again.)"""
    time.sleep(ANSWER_AFTER)
    response = client.request(
        "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
        json={"chosen_options": [answer], "params_input": {}})
    assert response.status_code == 200, response.text


def _serving(endpoint: str) -> str:
    """The version the model server answers with now."""
    response = httpx.post(f"{endpoint}/invocations", content=EXAMPLE_REQUEST.read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def _champion(stack: Stack) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(stack.mlflow_url).get_model_version_by_alias(
        MODEL, "champion").version)


def _ended(client: AirflowClient, run_id: str, timeout: float = 600) -> dict[str, Any]:
    final = client.wait_for_run(DAG_ID, run_id, timeout=timeout)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run_id)}
    return {**final, "states": states}


@pytest.fixture(scope="module")
def approved(client: AirflowClient) -> dict[str, Any]:
    """The first run: it waits for a person, who approves it over the REST API."""
    run_id = client.trigger(DAG_ID)["dag_run_id"]
    detail = _awaiting(client, run_id)
    handle = client.xcom(DAG_ID, run_id, "deploy")["__data__"]
    serving_while_asked = _serving(handle["endpoint"])
    _answer(client, run_id, "Approve")
    return {"run_id": run_id, "detail": detail, "handle": handle,
            "serving_while_asked": serving_while_asked, **_ended(client, run_id)}


def test_a_run_waits_for_a_person_and_an_approval_promotes(
        approved: dict[str, Any], stack: Stack) -> None:
    version = approved["handle"]["model_version"]
    detail = approved["detail"]
    assert detail["task_instance"]["state"] == "awaiting_input"
    assert detail["subject"] == f"Promote {MODEL} version {version} to champion?"
    assert "**Gate:** candidate roc_auc=" in detail["body"]
    assert approved["serving_while_asked"] == version  # replace: it serves, not champion yet
    assert approved["state"] == "success", approved["states"]
    assert approved["states"]["promote"] == "success"
    assert _serving(approved["handle"]["endpoint"]) == version
    assert _champion(stack) == version
    assert approved["note"].startswith("**ctcd:** gate: deploy (candidate roc_auc=")
    assert "no champion yet" in approved["note"]
    assert f"Version {version} approved by admin." in approved["note"]
    assert f"Version {version} is the champion." in approved["note"]


def _rejected(client: AirflowClient, approved: dict[str, Any], conf: dict[str, Any],
              answer: str | None) -> dict[str, Any]:
    """A later run (same partition, forced: as good as the champion, so the gate deploys
    it), answered ``answer`` or left to time out."""
    assert approved["state"] == "success"
    run_id = client.trigger(DAG_ID, {"force": True, **conf})["dag_run_id"]
    detail = _awaiting(client, run_id)
    handle = client.xcom(DAG_ID, run_id, "deploy")["__data__"]
    serving_while_asked = _serving(handle["endpoint"])
    asked_at = time.monotonic()
    if answer is not None:
        _answer(client, run_id, answer)
    ended = _ended(client, run_id)
    return {"run_id": run_id, "detail": detail, "handle": handle, **ended,
            "serving_while_asked": serving_while_asked, "waited": time.monotonic() - asked_at}


def _check_champion_serves_again(result: dict[str, Any], approved: dict[str, Any],
                                 stack: Stack) -> None:
    champion, candidate = approved["handle"]["model_version"], result["handle"]["model_version"]
    assert candidate != champion
    assert result["serving_while_asked"] == candidate
    assert result["state"] == "success", result["states"]
    assert result["states"]["approve"] == "success"
    assert result["states"]["promote"] == "skipped"
    assert _serving(result["handle"]["endpoint"]) == champion  # the real server says so
    assert _champion(stack) == champion
    assert "**ctcd:** gate: deploy (candidate roc_auc=" in result["note"]
    assert f"beats champion v{champion}" in result["note"]


def test_a_rejection_rolls_back_and_the_champion_keeps_serving(
        client: AirflowClient, approved: dict[str, Any], stack: Stack) -> None:
    result = _rejected(client, approved, {}, "Reject")
    _check_champion_serves_again(result, approved, stack)
    version = result["handle"]["model_version"]
    assert f"Version {version} rejected by admin; it was rolled back" in result["note"]
    [ti] = [t for t in client.task_instances(DAG_ID, result["run_id"])
            if t["task_id"] == "approve"]
    log = client.task_log(DAG_ID, result["run_id"], "approve", try_number=ti["try_number"])
    assert f"champion version {approved['handle']['model_version']} is serving again" in log


def test_no_answer_in_time_is_a_rejection_applied_by_the_scheduler(
        client: AirflowClient, approved: dict[str, Any], stack: Stack) -> None:
    result = _rejected(client, approved, {"approval_timeout_minutes": 1}, None)
    _check_champion_serves_again(result, approved, stack)
    assert result["waited"] >= 30  # asked with a one-minute deadline, answered by no one
    version = result["handle"]["model_version"]
    assert f"Version {version} rejected: no answer in time" in result["note"]
    response = client.request("GET", f"/dags/{DAG_ID}/dagRuns/{result['run_id']}/hitlDetails")
    [detail] = response.json()["hitl_details"]
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"] is None

