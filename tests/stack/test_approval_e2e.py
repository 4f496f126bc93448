"""Human approval before promotion with the real scheduler: the embedded stack (Airflow 3's
api-server, scheduler, dag-processor and triggerer, MLflow) runs a training DAG generated
from a model file of the test's own with ``deployment.approval: true``; every answer is
given over the REST API v2 (``PATCH .../hitlDetails``, as the UI's Required Actions does),
and what serves is asked of the real model server (its ``X-Model-Version`` header).

In order, on one stack (the runs build on each other): the first run waits in
``awaiting_input`` and an approval promotes it; a second run's version, deployed and
verified, is rejected and the champion serves again; a third gets no answer, and the
scheduler's response-timeout sweep applies the default answer, Reject, with the same
result; a fourth is approved and its approval step cleared before the scheduler acts: the
step asks again, and the new answer, Reject, decides. Each run's note says the gate's
decision and the answer. Answers come at once, as a script's would, so Airflow 3.3's
scheduler often fails the answered try and retries it (see ``_answer``); the retry acts on
the answer given. Then a second model file deploys new versions as shadows that see too
few requests to be judged: each is handed to a person with its comparison, and stays
shadowing (answering no client) until a rejection drops it or an approval makes it live."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from tests.stack.support import running_stack, unpaused

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.deployers.local import LocalDeployer
from ctcd.settings import PROJECT_ROOT, Settings
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.embedded import Stack

pytestmark = pytest.mark.e2e
KEY = "approval"  # the model file's name: its training DAG is approval_training
DAG_ID = f"{KEY}_training"
MODEL = "churn-approval-e2e"
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
# A model deployed as a shadow that sees too few requests to be judged (no client sends
# any while the deploy compares), so the approval decides. Its first version is deployed
# with replace (a shadow needs a live version), with the replace strategy's defaults.
SHADOW_KEY = "shadowed"
SHADOW_DAG_ID = f"{SHADOW_KEY}_training"
SHADOW_MODEL = "churn-shadow-e2e"
SHADOW_MODEL_FILE = {**MODEL_FILE, "name": SHADOW_MODEL, "deployment": {
    "strategy": "shadow", "approval": True,
    "strategy_options": {"min_requests": 100_000, "max_seconds": 3, "poll_seconds": 0.5}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("approval-stack")
    models = home / "models"
    models.mkdir()
    (models / f"{KEY}.yaml").write_text(yaml.safe_dump(MODEL_FILE, sort_keys=False))
    (models / f"{SHADOW_KEY}.yaml").write_text(yaml.safe_dump(SHADOW_MODEL_FILE,
                                                             sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CTCD_MODELS_DIR", str(models))  # the stack's processes inherit it
        with running_stack(home) as stack:
            produce(datetime.now(UTC).date(), 2_000, spec=load_spec("churn"),
                    landing_uri=f"file://{home / 'landing' / 'churn'}/")
            yield stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[AirflowClient]:
    with unpaused(stack, DAG_ID, SHADOW_DAG_ID) as client:
        yield client


def _awaiting(client: AirflowClient, run_id: str, timeout: float = 600,
              dag_id: str = DAG_ID) -> dict[str, Any]:
    """Wait until the run's approval step asks; returns its HITL detail."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.dag_run(dag_id, run_id)
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
        assert run["state"] in ("queued", "running"), (run["state"], states)
        if states.get("approve") == "awaiting_input":
            response = client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/hitlDetails")
            response.raise_for_status()
            [detail] = response.json()["hitl_details"]
            assert run["state"] == "running"
            return dict(detail)
        assert time.monotonic() < deadline, f"the approval was never asked: {states}"
        time.sleep(2)


def _answer(client: AirflowClient, run_id: str, answer: str, dag_id: str = DAG_ID) -> None:
    """Answer at once, as a script would. (Airflow 3.3.2's scheduler fails a task answered
    before it has processed the executor's report that the asking workload exited, "state
    changed externally", and retries it; the approval step's next try then acts on the
    answer given instead of asking again.)"""
    response = client.request(
        "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
        json={"chosen_options": [answer], "params_input": {}})
    assert response.status_code == 200, response.text


def _serving(endpoint: str) -> str:
    """The version the model server answers with now."""
    response = httpx.post(f"{endpoint}/invocations", content=EXAMPLE_REQUEST.read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def _champion(stack: Stack, model: str = MODEL) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(stack.mlflow_url).get_model_version_by_alias(
        model, "champion").version)


def _ended(client: AirflowClient, run_id: str, timeout: float = 600,
           dag_id: str = DAG_ID) -> dict[str, Any]:
    final = client.wait_for_run(dag_id, run_id, timeout=timeout)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
    return {**final, "states": states}


@pytest.fixture(scope="module")
def approved(client: AirflowClient) -> dict[str, Any]:
    """The first run: it waits for a person, who approves it over the REST API."""
    run_id = client.trigger(DAG_ID)["dag_run_id"]
    detail = _awaiting(client, run_id)
    handle = client.xcom(DAG_ID, run_id, "deploy")["__data__"]
    serving_while_asked = _serving(handle["endpoint"])
    _answer(client, run_id, "Approve")
    ended = _ended(client, run_id)
    tis = client.task_instances(DAG_ID, run_id)
    [tries] = [t["try_number"] for t in tis if t["task_id"] == "approve"]
    return {"run_id": run_id, "detail": detail, "handle": handle, "tis": tis,
            "approve_log": client.task_log(DAG_ID, run_id, "approve", try_number=tries),
            "serving_while_asked": serving_while_asked, **ended}


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
    [ti] = [t for t in approved["tis"] if t["task_id"] == "approve"]
    if ti["try_number"] > 1:  # the scheduler failed the answered try (see _answer)
        log = approved["approve_log"]
        assert "was stopped by the scheduler" in log or "finishing without acting twice" in log
        assert "Waiting for a person" not in log  # the answer given was acted on


def _rejected(client: AirflowClient, approved: dict[str, Any], conf: dict[str, Any],
              answer: str | None,
              give: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """A later run (same partition, forced: as good as the champion, so the gate deploys
    it), answered ``answer`` or left to time out."""
    assert approved["state"] == "success"
    run_id = client.trigger(DAG_ID, {"force": True, **conf})["dag_run_id"]
    detail = _awaiting(client, run_id)
    handle = client.xcom(DAG_ID, run_id, "deploy")["__data__"]
    serving_while_asked = _serving(handle["endpoint"])
    asked_at = time.monotonic()
    if answer is not None:
        (give or (lambda run, chosen: _answer(client, run, chosen)))(run_id, answer)
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


def _answer_then_clear_while_the_scheduler_is_held(client: AirflowClient, stack: Stack,
                                                   run_id: str) -> None:
    """Approve, then clear the approval step before the scheduler resumes it (held with
    SIGSTOP, so the order is certain): a clear starts the step anew, which asks again."""
    scheduler = stack.pid("scheduler")
    assert scheduler is not None
    os.kill(scheduler, signal.SIGSTOP)
    try:
        _answer(client, run_id, "Approve")
        response = client.request("POST", f"/dags/{DAG_ID}/clearTaskInstances", json={
            "dry_run": False, "dag_run_id": run_id, "task_ids": ["approve"],
            "only_failed": False})
        assert response.status_code == 200, response.text
    finally:
        os.kill(scheduler, signal.SIGCONT)
    _awaiting(client, run_id)  # asked again, by the try the clear started


def test_a_cleared_approval_asks_again_and_the_new_answer_decides(
        client: AirflowClient, approved: dict[str, Any], stack: Stack) -> None:
    def approve_clear_then_reject(run_id: str, answer: str) -> None:
        _answer_then_clear_while_the_scheduler_is_held(client, stack, run_id)
        _answer(client, run_id, answer)

    result = _rejected(client, approved, {}, "Reject", give=approve_clear_then_reject)
    _check_champion_serves_again(result, approved, stack)
    version = result["handle"]["model_version"]
    assert f"Version {version} rejected by admin; it was rolled back" in result["note"]
    [ti] = [t for t in client.task_instances(DAG_ID, result["run_id"])
            if t["task_id"] == "approve"]
    assert ti["try_number"] >= 2
    # The try the clear started (read from its file: the REST API may not find an earlier
    # try's record once a clear has replaced the task instance).
    log = (stack.home / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={result['run_id']}"
           / "task_id=approve" / "attempt=2.log").read_text()
    assert "Waiting for a person to approve" in log  # asked afresh, not the old answer
    assert "stopped by the scheduler" not in log


@pytest.fixture(scope="module")
def shadow_champion(client: AirflowClient, stack: Stack) -> str:
    """The shadowed model's first version, deployed with replace and no approval."""
    run_id = client.trigger(SHADOW_DAG_ID, {"strategy": "replace", "approval": False})[
        "dag_run_id"]
    ended = _ended(client, run_id, dag_id=SHADOW_DAG_ID)
    assert ended["state"] == "success", ended["states"]
    return _champion(stack, SHADOW_MODEL)


def _shadow_run(client: AirflowClient, live: str, stack: Stack,
                answer: str) -> dict[str, Any]:
    """A shadow deploy of a new version, left shadowing for lack of requests, answered."""
    run_id = client.trigger(SHADOW_DAG_ID, {"force": True})["dag_run_id"]
    detail = _awaiting(client, run_id, dag_id=SHADOW_DAG_ID)
    version = client.xcom(SHADOW_DAG_ID, run_id, "register")["version"]
    record = client.xcom(SHADOW_DAG_ID, run_id, "deploy", key="deployment")
    handle = client.xcom(SHADOW_DAG_ID, run_id, "deploy")["__data__"]
    shadow = LocalDeployer(Settings(home=stack.home)).describe_model_server(
        handle["service_id"]).shadow
    serving_while_asked = _serving(handle["endpoint"])  # a live request, copied to the shadow
    _answer(client, run_id, answer, dag_id=SHADOW_DAG_ID)
    ended = _ended(client, run_id, dag_id=SHADOW_DAG_ID)
    after = LocalDeployer(Settings(home=stack.home)).describe_model_server(
        handle["service_id"]).shadow
    return {"run_id": run_id, "detail": detail, "version": version, "record": record,
            "handle": handle, "shadow_while_asked": shadow, "shadow_after": after,
            "serving_while_asked": serving_while_asked, "live": live, **ended}


def _check_held(result: dict[str, Any]) -> None:
    version, live = result["version"], result["live"]
    assert (result["record"]["strategy"], result["record"]["outcome"]) == ("shadow", "held")
    assert any("inconclusive (only" in note for note in result["record"]["notes"])
    body = result["detail"]["body"]
    assert f"Version {version} **shadows** the live version" in body
    assert f"**Shadow comparison now** (version {version} against {live}" in body
    assert "**Verify:** not run: a shadow answers no client" in body
    shadow = result["shadow_while_asked"]
    assert shadow is not None and shadow["version"] == version  # kept shadowing while asked
    assert result["serving_while_asked"] == live  # and never answered a client
    assert result["state"] == "success", result["states"]
    assert result["states"]["verify"] == "success" and result["states"]["approve"] == "success"
    assert result["shadow_after"] is None  # ended by the answer, either way


def test_an_inconclusive_shadow_is_handed_to_a_person_whose_rejection_drops_it(
        client: AirflowClient, shadow_champion: str, stack: Stack) -> None:
    result = _shadow_run(client, shadow_champion, stack, "Reject")
    _check_held(result)
    assert result["states"]["promote"] == "skipped"
    assert _serving(result["handle"]["endpoint"]) == result["live"]
    assert _champion(stack, SHADOW_MODEL) == result["live"]
    assert f"Version {result['version']} rejected by admin" in result["note"]


def test_an_inconclusive_shadow_is_handed_to_a_person_whose_approval_makes_it_live(
        client: AirflowClient, shadow_champion: str, stack: Stack) -> None:
    result = _shadow_run(client, shadow_champion, stack, "Approve")
    _check_held(result)
    version = result["version"]
    assert result["states"]["promote"] == "success"
    assert _serving(result["handle"]["endpoint"]) == version
    assert _champion(stack, SHADOW_MODEL) == version
    assert f"Version {version} approved by admin. Version {version} is the champion." in (
        result["note"])
