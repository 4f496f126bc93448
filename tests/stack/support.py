"""Helpers shared by the stack tests (importable, not fixtures)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Container, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctcd.settings import Settings
from ctcd.stack.airflow_api import AirflowApiError, AirflowClient
from ctcd.stack.config import ADMIN_PASSWORD, ADMIN_USER
from ctcd.stack.embedded import Ports, Stack
from ctcd.stack.processes import free_port


@contextmanager
def running_stack(home: Path) -> Iterator[Stack]:
    """The embedded stack (Airflow on SQLite, MLflow) started in ``home`` on free ports; on
    the way out its model servers and processes stop, and none may be left running."""
    stack = Stack(home=home, ports=Ports(airflow=free_port(), mlflow=free_port()))
    try:
        stack.up(timeout=300)
        yield stack
    finally:
        stop_model_servers(home)
        stack.down()
        assert all(pid is None for pid in stack.status().values())


@contextmanager
def unpaused(stack: Stack, *dag_ids: str) -> Iterator[AirflowClient]:
    """A REST API client of ``stack`` once each of ``dag_ids`` is parsed and unpaused."""
    client = AirflowClient(stack.airflow_url, ADMIN_USER, ADMIN_PASSWORD)
    try:
        for dag_id in dag_ids:
            client.wait_for_dag(dag_id)
            client.set_paused(dag_id, False)
        yield client
    finally:
        client.close()


def stop_model_servers(home: Path) -> None:
    """Delete every model server the local deployer started under ``home``."""
    from ctcd.deployers.local.deployer import LocalDeployer

    deployer = LocalDeployer(Settings(home=home))
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=30, force=True)


def asset_id(client: AirflowClient, uri: str) -> int:
    """The id Airflow gave the Asset ``uri`` (it exists once a DAG naming it is parsed)."""
    response = client.request("GET", "/assets", params={"uri_pattern": uri})
    response.raise_for_status()
    [found] = [a for a in response.json()["assets"] if a["uri"] == uri]
    return int(found["id"])


def post_asset_event(client: AirflowClient, uri: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a producer outside Airflow does after landing data: ``POST /assets/events``."""
    response = client.request("POST", "/assets/events",
                              json={"asset_id": asset_id(client, uri), "extra": dict(extra)})
    if response.status_code != 200:
        raise AirflowApiError(f"POST /assets/events answered {response.status_code}: "
                              f"{response.text}")
    return dict(response.json())


def upstream_events(client: AirflowClient, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The Asset events a run consumed (what started an asset-triggered run)."""
    response = client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
    response.raise_for_status()
    return list(response.json()["asset_events"])


def wait_for_asset_run(client: AirflowClient, dag_id: str, uri: str, *, timeout: float,
                       exclude: Container[str] = ()) -> dict[str, Any]:
    """The first asset-triggered run of ``dag_id`` (not in ``exclude``) that an event of the
    Asset ``uri`` started; waits for the scheduler to create it."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.request("GET", f"/dags/{dag_id}/dagRuns",
                                  params={"run_type": "asset_triggered", "order_by": "run_after"})
        response.raise_for_status()
        for run in response.json()["dag_runs"]:
            if run["dag_run_id"] in exclude:
                continue
            events = upstream_events(client, dag_id, run["dag_run_id"])
            if any(event["uri"] == uri for event in events):
                return {**run, "events": events}
        if time.monotonic() > deadline:
            raise AirflowApiError(f"no asset-triggered run of {dag_id} started by {uri} "
                                  f"within {timeout:.0f}s; check the scheduler log")
        time.sleep(2)


def query(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()
