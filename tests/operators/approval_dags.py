"""A DAG run by tests/operators/test_approval.py with ``airflow dags test`` (not in dags/):
the tail of a training DAG, register -> deploy -> approve -> promote, on a model the test
registered (the environment names it)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

from ctcd.operators import DeployModelOperator
from ctcd.operators.approval import ApproveDeploymentOperator

MODEL = os.environ.get("CTCD_E2E_MODEL", "")
VERSION = os.environ.get("CTCD_E2E_VERSION", "")


@dag(dag_id="ctcd_e2e_approval", schedule=None, start_date=datetime(2026, 1, 1),
     catchup=False, tags=["test"],
     params={"approval": Param(True, type="boolean"),
             "approval_timeout_minutes": Param(10, type="integer")})
def ctcd_e2e_approval() -> None:
    @task
    def register() -> dict[str, Any]:
        return {"model_name": MODEL, "version": VERSION,
                "run_id": os.environ.get("CTCD_E2E_RUN_ID")}

    @task
    def evaluate() -> dict[str, Any]:  # as the training DAG's evaluate returns it
        return {"metric": "roc_auc", "candidate": {"roc_auc": 0.91, "accuracy": 0.85},
                "champion": {"roc_auc": 0.88, "accuracy": 0.84},
                "champion_version": os.environ.get("CTCD_E2E_CHAMPION"), "holdout_rows": 800}

    registered = register()
    evaluate() >> registered
    deploy = DeployModelOperator(task_id="deploy", model_name=MODEL, model_version=VERSION,
                                 strategy="replace", timeout=240, deferrable=False)
    approve = ApproveDeploymentOperator(task_id="approve", registered=registered)

    @task
    def promote() -> None:
        Path(os.environ["CTCD_E2E_MARKER"]).write_text("promoted")

    registered >> deploy >> approve >> promote()


ctcd_e2e_approval()
