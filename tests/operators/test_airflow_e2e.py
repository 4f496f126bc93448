"""Under real Airflow (``airflow dags test`` on a migrated metadata DB): the deploy operator
defers until ready, its handle crosses XCom to downstream tasks, extra links are stored, and
model servers outlive the task that started them, whether it ends or its process group is
killed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.deployers.conftest import cleanup
from tests.oracle import pyfunc_predictions

from ctcd.deployers.local import LocalDeployer
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
DAG_FILE = Path(__file__).with_name("e2e_dags.py")
PORTS = (9500, 9599)


@pytest.fixture
def run_env(
    tmp_path: Path, airflow_home: Path, mlflow_server: str, churn_model: Any
) -> dict[str, str]:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    return {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "CTCD_E2E_URI": churn_model.uri,
        "CTCD_HOME": str(tmp_path / "ctcd"),
        "CTCD_SERVER_PORT_RANGE": json.dumps(list(PORTS)),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "CTCD_E2E_MODEL": churn_model.name,
        "CTCD_E2E_VERSION": churn_model.version,
        "CTCD_E2E_RUN_ID": churn_model.run_id,
        "CTCD_E2E_ROWS": churn_model.example.to_json(orient="records"),  # both classes
        "CTCD_E2E_MARKER": str(tmp_path / "marker"),
    }


@pytest.fixture
def deployer(run_env: dict[str, str]) -> Any:
    backend = LocalDeployer(Settings(home=Path(run_env["CTCD_HOME"]), server_port_range=PORTS))
    yield backend
    cleanup(backend)


def _dags_test(dag_id: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )


def test_deploy_defers_hands_over_through_xcom_and_server_outlives_the_run(
    run_env: dict[str, str], deployer: LocalDeployer, churn_model: Any
) -> None:
    proc = _dags_test("ctcd_e2e_deploy", run_env)
    output, _ = proc.communicate(timeout=420)
    marker = Path(run_env["CTCD_E2E_MARKER"])
    assert proc.returncode == 0 and marker.exists(), output[-4000:]
    finished = re.search(r"DagRun Finished: dag_id=ctcd_e2e_deploy,.*?state=(\w+)", output)
    assert finished is not None and finished.group(1) == "success", output[-2000:]
    result = json.loads(marker.read_text())
    assert result["running"] is True
    rows = json.loads(run_env["CTCD_E2E_ROWS"])
    assert result["predictions"] == pyfunc_predictions(churn_model.uri, rows)
    assert result["lineage"][:2] == ["ctcd_e2e_deploy", "deploy"] and result["lineage"][2]
    assert result["lineage"][3] == churn_model.run_id
    assert result["server_link"] == f"{result['endpoint']}/v2/models/{churn_model.name}"
    assert f"/runs/{churn_model.run_id}" in result["mlflow_link"]
    assert "deferr" in output.lower()  # waited for readiness in the trigger, not the worker

    # the Airflow process is gone; the server it started is not
    [handle] = deployer.find_model_server(running=True)
    assert handle.service_id == result["service_id"]
    rows = churn_model.example
    assert handle.predict(rows) == pyfunc_predictions(churn_model.uri, rows)


def test_server_survives_its_task_process_group_being_killed(
    run_env: dict[str, str], deployer: LocalDeployer, churn_model: Any
) -> None:
    proc = _dags_test("ctcd_e2e_killed", run_env, start_new_session=True)
    marker = Path(run_env["CTCD_E2E_MARKER"])
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-4000:] if proc.stdout else ""
        assert time.monotonic() < deadline, "the task never deployed"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # what Airflow does to a timed-out / failed task
    proc.wait(timeout=30)

    [handle] = deployer.find_model_server(running=True)
    assert handle.service_id == marker.read_text()
    assert handle.server_name == "killed-task-server"
    rows = churn_model.example
    assert handle.predict(rows) == pyfunc_predictions(churn_model.uri, rows)
