"""What the pages show besides the rows: formatting filters, the configured deployer and
MLflow reader, Airflow's own records (pending approvals, paused DAGs, a run's summary) and a
deployment's history, logs and lineage. Each read is bounded: a database or a backend that
fails makes its part of the page say so, never the page fail.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request

from ctcd.deployers.base import DeploymentEvent, ModelDeployer
from ctcd.deployers.registry import get_deployer
from ctcd.deployers.scorers import ScorerInfo, scorers_of
from ctcd.errors import CtcdError
from ctcd.lineage import GATE_TAG, Lineage, MlflowReader, MlflowUnavailable, resolve
from ctcd.services.handle import ServiceHandle
from ctcd.ui.deployments import _POOL, Row

log = logging.getLogger(__name__)
OPS_DAG = "model_server_ops"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def when(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(value).replace("T", " ")[:19]


def deployer() -> ModelDeployer:
    return get_deployer()


def mlflow_reader() -> MlflowReader:
    from ctcd.settings import get_settings

    return _reader(get_settings().tracking_uri())


@cache
def _reader(uri: str) -> MlflowReader:
    """One reader per tracking server, so its short cache serves every page refresh."""
    return MlflowReader(uri, timeout=0.5)


def base(request: Request) -> dict[str, Any]:
    """Where the app is mounted and where Airflow's UI is (links open in the UI's frame)."""
    return {"prefix": str(request.scope.get("root_path", "")).rstrip("/"),
            "airflow": os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")}


def owner_of(handle: ServiceHandle) -> str:
    """The DAG whose edit rights an action on this server needs: the DAG that deployed the
    serving version, else the operations DAG (a server deployed from the CLI)."""
    return handle.dag_id or OPS_DAG


def owner_dag(row: Row) -> str:
    return owner_of(row.handle) if row.handle is not None else OPS_DAG


def history(row: Row) -> Sequence[DeploymentEvent]:
    return row.description.history if row.description is not None else ()


def gates(reader: MlflowReader, events: Sequence[DeploymentEvent], *,
          budget: float = 0.6) -> dict[tuple[str, str], str]:
    """The gate's decision (candidate against champion, threshold) each version in
    ``events`` was registered with, read from its registry tag within ``budget`` seconds:
    a version MLflow did not answer for in time, or one with no gate (deployed by hand),
    is left out."""
    wanted = {(e.config.model_name, e.config.model_version) for e in events
              if e.config.model_name and e.config.model_version}
    asked = {key: _POOL.submit(reader.version, *key) for key in wanted}
    deadline = time.monotonic() + budget
    found: dict[tuple[str, str], str] = {}
    for key, future in asked.items():
        try:
            gate = future.result(timeout=max(0.0, deadline - time.monotonic()))["tags"].get(
                GATE_TAG)
        except FutureTimeout:
            break  # the budget is spent: the rest say nothing rather than hold the page
        except MlflowUnavailable:
            continue
        if gate:
            found[key] = gate
    return found


def logs(deployer: ModelDeployer, handle: ServiceHandle, *, tail: int = 40,
         budget: float = 1.0) -> str:
    def read() -> str:
        return "".join(line if line.endswith("\n") else line + "\n"
                       for line in deployer.get_logs(handle.service_id, tail=tail))

    future = _POOL.submit(read)
    try:
        return future.result(timeout=budget)
    except FutureTimeout:
        return f"(the logs did not arrive within {budget:g}s)"
    except CtcdError as err:
        return f"(no logs: {err.message})"


def lineage(reader: MlflowReader, handle: ServiceHandle, request: Request) -> Lineage:
    where = base(request)
    return resolve(reader, handle.model_name, handle.model_version,
                   airflow_url=where["airflow"],
                   deployed_by={"dag_id": handle.dag_id, "run_id": handle.run_id,
                                "task_id": handle.task_id},
                   data_docs_url=lambda page: data_docs_link(where["prefix"], page))


def data_docs_link(prefix: str, page: str) -> str:
    from ctcd.settings import get_settings
    from ctcd.validation.docs_site import page_link

    return page_link(get_settings().home, page, prefix)


def data_docs_file(path: str) -> Path | None:
    from ctcd.settings import get_settings
    from ctcd.validation.docs_site import site_file

    return site_file(get_settings().home, path)


def scorer(deployer: ModelDeployer, name: str) -> ScorerInfo:
    return scorers_of(deployer).describe_scorer(name)


def pending_approvals() -> list[dict[str, Any]]:
    """Approval steps waiting for a person (Airflow's metadata database)."""
    from airflow.utils.session import create_session
    from sqlalchemy.exc import SQLAlchemyError

    from ctcd.ui.runs import pending_approvals as pending

    try:
        with create_session() as session:
            return pending(session)
    except SQLAlchemyError as err:
        log.warning("could not read pending approvals: %s", err)
        return []


def paused_dags() -> list[str]:
    """The project's DAGs that are paused now (a paused DAG runs nothing, not even on an
    Asset event), so the page can say so."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with create_session() as session:
            return sorted(session.scalars(select(DagModel.dag_id).where(
                DagModel.is_paused.is_(True), DagModel.is_stale.is_(False))).all())
    except SQLAlchemyError as err:
        log.warning("could not read paused DAGs: %s", err)
        return []


def run_summary(dag_id: str, run_id: str) -> dict[str, Any]:
    """What a training run decided and deployed, for its ``Deployment`` tab."""
    from airflow.utils.session import create_session

    from ctcd.ui.runs import note, read_run

    with create_session() as session:
        record = read_run(session, dag_id, run_id)
    if record is None:
        return {"dag_id": dag_id, "run_id": run_id, "found": False}
    deployed = record.value("deploy")
    return {"dag_id": dag_id, "run_id": run_id, "found": True, "state": record.state,
            "decision": record.mapping("deployment_trigger", "decision"),
            "registered": record.mapping("register"),
            "deployed": deployed if isinstance(deployed, dict) else None,
            "deployment": record.mapping("deploy", "deployment"),
            "approval": record.approval, "summary": note(record),
            "tasks": record.task_states}
