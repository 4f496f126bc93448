"""The scale profile for real: the layout of docker-compose.yaml without containers.

A private PostgreSQL 15 cluster (Airflow's metadata DB, Celery's result backend, MLflow's
backend store), Redis (the Celery broker), the MLflow tracking server, Airflow 3's
api-server, scheduler, dag-processor and triggerer, and two ``airflow celery worker``
processes with distinct hostnames, all on loopback. Driven only through the REST API v2.

Run by ``make test-scale`` (marker ``scale``); ``make test`` leaves it out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import psycopg2
import pytest
from celery import Celery
from tests.oracle import pyfunc_predictions, request_rows
from tests.stack.support import stop_model_servers

from ctcd.data.producer import produce
from ctcd.data.spec import load_spec
from ctcd.settings import PROJECT_ROOT
from ctcd.stack.airflow_api import AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import Ports, Stack
from ctcd.stack.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.scale]
DAG_ID = "churn_training"  # generated from include/models/churn.yaml
BATCH_DAG_ID = "churn_batch_inference"
WORKERS = ("worker-1", "worker-2")
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("scale")
    ports = Ports(airflow=free_port(), mlflow=free_port(), postgres=free_port(), redis=free_port())
    stack = Stack(home=home, ports=ports, profile="scale", workers=len(WORKERS))
    try:
        stack.up(timeout=420)
        yield stack
    finally:
        stop_model_servers(home)
        stack.down()
        stack.postgres.remove()
        assert all(pid is None for pid in stack.status().values())


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[AirflowClient]:
    client = AirflowClient(stack.airflow_url, ADMIN_USER, ADMIN_PASSWORD)
    client.wait_for_dag(DAG_ID, timeout=300)
    client.set_paused(DAG_ID, False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def trained(stack: Stack, client: AirflowClient) -> dict[str, Any]:
    """A partition landed, then one continuous_training run, triggered over the REST API,
    waited to its end."""
    produce(datetime.now(UTC).date(), 4_000, spec=load_spec("churn"),
            landing_uri=f"file://{stack.home / 'landing' / 'churn'}/")
    run = client.trigger(
        DAG_ID,
        {"estimator": "logistic_regression", "threshold": 0.7, "strategy": "replace"},
    )
    final = client.wait_for_run(DAG_ID, run["dag_run_id"], timeout=900)
    return {**final, "task_instances": client.task_instances(DAG_ID, run["dag_run_id"])}


def _hostnames(task_instances: list[dict[str, Any]]) -> dict[str, str]:
    """``task_id[map_index]`` -> the hostname the task instance recorded."""
    return {
        f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]:
            ti["hostname"]
        for ti in task_instances
    }


def _sql(stack: Stack, database: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(stack.postgres.url(database, driver="postgresql"))
    try:
        with conn.cursor() as cursor:
            cursor.execute(query, args)
            return list(cursor.fetchall())
    finally:
        conn.close()


def test_both_celery_workers_consume_the_default_queue(stack: Stack) -> None:
    expected = {f"celery@{name}" for name in WORKERS}
    queues: dict[str, Any] = {}
    app = Celery(broker=stack.broker_url)
    try:
        deadline = time.monotonic() + 120  # a busy machine may answer late: ask again
        while set(queues) != expected and time.monotonic() < deadline:
            missing = sorted(expected - set(queues))
            queues |= app.control.inspect(destination=missing, timeout=5.0).active_queues() or {}
    finally:
        app.close()
    assert set(queues) == expected
    for consumed in queues.values():
        assert [queue["name"] for queue in consumed] == ["default"]


def test_continuous_training_succeeds_on_the_celery_workers(
    trained: dict[str, Any], stack: Stack
) -> None:
    states = {ti["task_id"]: ti["state"] for ti in trained["task_instances"]}
    assert trained["state"] == "success", states
    hostnames = _hostnames(trained["task_instances"])
    assert set(hostnames.values()) <= set(WORKERS), hostnames
    assert {ti["queue"] for ti in trained["task_instances"]} == {"default"}

    # The run, its task instances and Celery's task results are in PostgreSQL.
    rows = _sql(stack, "airflow", "SELECT state FROM dag_run WHERE run_id = %s",
                trained["dag_run_id"])
    assert rows == [("success",)]
    recorded = dict(_sql(stack, "airflow",
                         "SELECT task_id, hostname FROM task_instance WHERE run_id = %s",
                         trained["dag_run_id"]))
    assert recorded == hostnames
    # A Celery task stores its result after the task instance reported success: wait a bit.
    deadline = time.monotonic() + 60
    while True:
        (results,), = _sql(stack, "airflow",
                           "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
        if results >= len(hostnames) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert results >= len(hostnames)


def test_the_deployed_model_answers_and_is_registered_in_mlflow_on_postgres(
    trained: dict[str, Any], client: AirflowClient, stack: Stack
) -> None:
    assert trained["state"] == "success"
    handle = client.xcom(DAG_ID, trained["dag_run_id"], "deploy")["__data__"]
    response = httpx.post(f"{handle['endpoint']}/invocations",
                          content=EXAMPLE_REQUEST.read_bytes(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == handle["model_version"]
    served = f"models:/{handle['model_name']}/{handle['model_version']}"
    rows = request_rows(json.loads(EXAMPLE_REQUEST.read_text()))
    assert response.json()["predictions"] == pyfunc_predictions(
        served, rows, tracking_uri=stack.mlflow_url)

    versions = _sql(stack, "mlflow",
                    "SELECT version FROM model_versions WHERE name = %s", handle["model_name"])
    assert (int(handle["model_version"]),) in versions


def test_batch_inference_partitions_run_on_both_workers(
    stack: Stack, trained: dict[str, Any], client: AirflowClient
) -> None:
    assert trained["state"] == "success"  # a champion serves
    scoring = f"file://{stack.home / 'scoring' / 'churn'}/"
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in range(4)]
    landed = {day: produce(day, 2_000, spec=load_spec("churn"), labels=False,
                           landing_uri=scoring)
              for day in days}  # four unlabelled partitions: four mapped tasks, two per worker
    client.wait_for_dag(BATCH_DAG_ID, timeout=300)
    client.set_paused(BATCH_DAG_ID, False)
    # Parquet output: the files are written by the worker that scores each partition.
    run = client.trigger(BATCH_DAG_ID, {"partitions": [d.isoformat() for d in days],
                                        "sink": "parquet"})
    final = client.wait_for_run(BATCH_DAG_ID, run["dag_run_id"], timeout=900)
    task_instances = client.task_instances(BATCH_DAG_ID, run["dag_run_id"])
    assert final["state"] == "success", _hostnames(task_instances)
    mapped = [ti for ti in task_instances if ti["map_index"] >= 0]
    assert len(mapped) >= 2
    assert {ti["hostname"] for ti in mapped} == set(WORKERS), _hostnames(mapped)
    # each partition's answers are those MLflow's own loader gives with the champion
    plan = client.xcom(BATCH_DAG_ID, run["dag_run_id"], "plan")
    model = f"models:/{plan['model_name']}/{plan['version']}"
    features = list(load_spec("churn").feature_names)
    for day, produced in landed.items():
        rows = pd.read_parquet(produced.partition)
        out = pd.read_parquet(stack.home / "predictions" / "churn" / f"date={day}"
                              / "predictions.parquet")
        assert set(out["model_version"]) == {plan["version"]}
        scored = dict(zip(out["customer_id"], out["prediction"], strict=True))
        want = pyfunc_predictions(model, rows[features], tracking_uri=stack.mlflow_url)
        assert [scored[i] for i in rows["customer_id"]] == want, day
