"""DAGs run by tests/operators/test_airflow_e2e.py with ``airflow dags test`` (not in dags/).

Settings come from the environment the test sets: the model to deploy and a marker file.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_current_context, task

from ctcd.operators import DeployModelOperator, PredictOperator

ROWS = json.loads(os.environ.get("CTCD_E2E_ROWS", "[]"))


@dag(dag_id="ctcd_e2e_deploy", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["test"])
def ctcd_e2e_deploy() -> None:
    deploy = DeployModelOperator(
        task_id="deploy",
        model_name=os.environ.get("CTCD_E2E_MODEL", ""),
        model_version=os.environ.get("CTCD_E2E_VERSION", ""),
        mlflow_run_id=os.environ.get("CTCD_E2E_RUN_ID"),
        strategy="replace",
        timeout=240,
        poll_interval=0.5,
        deferrable=True,
    )

    @task
    def use(handle: Any) -> dict[str, Any]:
        from ctcd.services import ServiceHandle

        assert isinstance(handle, ServiceHandle), type(handle)
        ti = get_current_context()["ti"]
        result = {
            "service_id": handle.service_id,
            "endpoint": handle.endpoint,
            "lineage": [handle.dag_id, handle.task_id, handle.run_id, handle.mlflow_run_id],
            "running": handle.is_running(),
            "predictions": handle.predict(ROWS),
            "server_link": ti.xcom_pull(task_ids="deploy", key="_link_ModelServerLink"),
            "mlflow_link": ti.xcom_pull(task_ids="deploy", key="_link_MlflowRunLink"),
        }
        Path(os.environ["CTCD_E2E_MARKER"]).write_text(json.dumps(result))
        return result

    predict = PredictOperator(task_id="predict", service=deploy.output, data=ROWS)
    use(deploy.output) >> predict


@dag(dag_id="ctcd_e2e_killed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["test"])
def ctcd_e2e_killed() -> None:
    @task
    def deploy_then_hang() -> None:
        from ctcd.deployers import DeploymentConfig, get_deployer

        handle = get_deployer().deploy_model(
            DeploymentConfig(
                model_name=os.environ["CTCD_E2E_MODEL"],
                model_version=os.environ["CTCD_E2E_VERSION"],
                model_uri=os.environ["CTCD_E2E_URI"],
                server="killed-task-server",
            ),
            timeout=240,
        )
        Path(os.environ["CTCD_E2E_MARKER"]).write_text(handle.service_id)
        time.sleep(600)  # the test kills this task's whole process group meanwhile

    deploy_then_hang()


ctcd_e2e_deploy()
ctcd_e2e_killed()
