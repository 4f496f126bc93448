"""The embedded stack for real: Airflow 3 (api-server, scheduler, dag-processor, triggerer)
and MLflow as processes in a temporary home, driven only through the REST API v2.

One continuous_training run trains, deploys and promotes a champion; its ``promote`` event
starts ``batch_inference``, which scores the scoring partitions landed before it into the
default SQLite predictions database; a producer's scoring Asset event then starts a run that
scores exactly the partition it names."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.stack.support import post_asset_event, query, stop_model_servers, wait_for_asset_run

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.settings import PROJECT_ROOT, Settings
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import Ports, Stack
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.e2e
DAG_ID = "continuous_training"
BATCH_DAG_ID = "batch_inference"
SERVING_URI = "ctcd://models/churn-classifier"
SCORING_URI = "ctcd://datasets/churn/scoring"
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"
TODAY = datetime.now(UTC).date()
SCORING_DAYS = {TODAY - timedelta(days=2): 600, TODAY - timedelta(days=1): 400}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    stack = Stack(home=home, ports=Ports(airflow=free_port(), mlflow=free_port()))
    try:
        stack.up(timeout=300)
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


def test_token_is_required(stack: Stack) -> None:
    response = httpx.get(f"{stack.airflow_url}/api/v2/dags/{DAG_ID}")
    assert response.status_code == 401


def _scoring_uri(stack: Stack) -> str:
    return f"file://{stack.home / 'scoring' / 'churn'}/"


def _land_scoring(stack: Stack, day: date, rows: int) -> Any:
    return produce(day, rows, spec=load_spec("churn"), labels=False,
                   landing_uri=_scoring_uri(stack))


@pytest.fixture(scope="module")
def trained(client: AirflowClient, stack: Stack) -> dict[str, Any]:
    """Scoring partitions landed and batch_inference unpaused, then one continuous_training
    run, triggered over the REST API with a conf override, waited to its end."""
    for day, rows in SCORING_DAYS.items():
        _land_scoring(stack, day, rows)
    client.wait_for_dag(BATCH_DAG_ID)
    client.set_paused(BATCH_DAG_ID, False)
    landing = f"file://{stack.home / 'landing' / 'churn'}/"
    produce(TODAY, 4_000, spec=load_spec("churn"), landing_uri=landing)
    run = client.trigger(
        DAG_ID,
        {
            "model_type": "logistic_regression",
            "min_roc_auc": 0.7,
            "strategy": "replace",
        },
    )
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=900)
    return {**final, "triggered": run,
            "task_instances": client.task_instances(DAG_ID, run["dag_run_id"])}


@pytest.fixture(scope="module")
def champion_batch(trained: dict[str, Any], client: AirflowClient) -> dict[str, Any]:
    """The batch_inference run that promote's serving Asset event started, waited to its end."""
    assert trained["state"] == "success"
    found = wait_for_asset_run(client, BATCH_DAG_ID, SERVING_URI, timeout=300)
    final = client.wait_for_run(BATCH_DAG_ID, found["dag_run_id"], timeout=900)
    return {**final, "events": found["events"]}


def _states(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in client.task_instances(dag_id, run_id):
        states.setdefault(ti["task_id"], []).append(ti["state"])
    return states


def test_triggered_run_with_conf_override_trains_deploys_and_serves(
    client: AirflowClient, stack: Stack, trained: dict[str, Any]
) -> None:
    run = trained["triggered"]
    assert run["conf"]["model_type"] == "logistic_regression"
    states = {ti["task_id"]: ti["state"] for ti in trained["task_instances"]}
    assert trained["state"] == "success", states

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
    # The deferred start was recorded pending, then completed when the operator saw it ready.
    from ctcd.deployers.local.deployer import LocalDeployer

    start = LocalDeployer(Settings(home=stack.home)).history(data["service_id"])[-1]  # first
    assert (start.strategy, start.outcome) == ("start", "succeeded")
    assert start.seconds_to_serving is not None and start.seconds_to_serving > 0

    train = client.xcom(DAG_ID, run["dag_run_id"], "train")
    assert train["metrics"]["holdout_roc_auc"] >= 0.7


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


def test_promote_event_starts_batch_inference_scoring_with_the_events_version(
    client: AirflowClient, stack: Stack, trained: dict[str, Any], champion_batch: dict[str, Any]
) -> None:
    registered = client.xcom(DAG_ID, trained["dag_run_id"], "register")
    run_id = champion_batch["dag_run_id"]
    assert champion_batch["run_type"] == "asset_triggered"
    assert champion_batch["state"] == "success", _states(client, BATCH_DAG_ID, run_id)
    [event] = [e for e in champion_batch["events"] if e["uri"] == SERVING_URI]
    assert (event["source_dag_id"], event["source_task_id"], event["source_run_id"]) == (
        DAG_ID, "promote", trained["dag_run_id"])
    assert event["extra"]["model_name"] == registered["model_name"]
    assert event["extra"]["version"] == registered["version"]

    rows = query(stack.home / "predictions.db",
                 "SELECT partition_date, COUNT(*), MIN(model_name), MAX(model_name), "
                 "MIN(model_version), MAX(model_version), MIN(dag_run_id), MAX(dag_run_id), "
                 "MIN(scored_at), MAX(scored_at) FROM predictions GROUP BY 1 ORDER BY 1")
    by_day = {date.fromisoformat(r[0]): r for r in rows}
    # Only a 02:00 UTC run of the daily schedule, if it fell before this one, scored them first.
    earlier = {d for d, r in by_day.items() if r[6].startswith("scheduled__")}
    expected = sorted(d for d in SCORING_DAYS if d not in earlier)
    planned = client.xcom(BATCH_DAG_ID, run_id, "plan")
    assert planned["version"] == event["extra"]["version"]
    assert planned["partitions"] == [d.isoformat() for d in expected]
    assert client.xcom(BATCH_DAG_ID, run_id, "report")["scored"] == sum(
        SCORING_DAYS[d] for d in expected)
    started = datetime.fromisoformat(event["timestamp"])
    ended = datetime.fromisoformat(champion_batch["end_date"])
    for day in expected:
        _, count, *names, v_lo, v_hi, r_lo, r_hi, t_lo, t_hi = by_day[day]
        assert count == SCORING_DAYS[day]
        assert set(names) == {registered["model_name"]}
        assert {v_lo, v_hi} == {registered["version"]} and {r_lo, r_hi} == {run_id}
        assert started <= datetime.fromisoformat(t_lo) <= datetime.fromisoformat(t_hi) <= ended


def test_a_landed_scoring_partition_starts_a_run_that_scores_exactly_it(
    client: AirflowClient, stack: Stack, champion_batch: dict[str, Any]
) -> None:
    assert champion_batch["state"] == "success"
    quiet = TODAY - timedelta(days=5)
    _land_scoring(stack, quiet, 100)  # landed without an event: not this run's business
    landed = _land_scoring(stack, TODAY, 300)
    post_asset_event(client, SCORING_URI, {"date": TODAY.isoformat(),
                                           "partition": landed.partition, "rows": landed.rows})
    found = wait_for_asset_run(client, BATCH_DAG_ID, SCORING_URI, timeout=300,
                               exclude={champion_batch["dag_run_id"]})
    run_id = found["dag_run_id"]
    final = client.wait_for_run(BATCH_DAG_ID, run_id, timeout=900)
    states = _states(client, BATCH_DAG_ID, run_id)
    assert final["state"] == "success", states
    assert [e["extra"]["date"] for e in found["events"]] == [TODAY.isoformat()]
    assert client.xcom(BATCH_DAG_ID, run_id, "plan")["partitions"] == [TODAY.isoformat()]
    assert states["score_partition"] == ["success"]  # one mapped task: that partition

    db = stack.home / "predictions.db"
    assert query(db, "SELECT partition_date, COUNT(*) FROM predictions WHERE dag_run_id = ? "
                     "GROUP BY 1", run_id) == [(TODAY.isoformat(), 300)]
    assert query(db, "SELECT COUNT(*) FROM predictions WHERE partition_date = ?",
                 TODAY.isoformat()) == [(300,)]
