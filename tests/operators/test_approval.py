"""Human approval before promotion, end to end: ``airflow dags test`` runs the tail of a
training DAG (deploy -> approve -> promote) on the session's metadata DB; the approval step
waits in ``awaiting_input`` with the evidence until a person answers over the REST API of
the session's real API server (``PATCH .../hitlDetails``), as the UI's Required Actions
does. Approve: ``promote`` runs. Reject: ``promote`` is skipped and the champion serves
again. (The response timeout is enforced by the scheduler's sweep, which ``dags test``
does not run; its default answer, Reject, takes the same path as a rejection.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api_server import ApiServer

from ctcd.deployers.local import LocalDeployer
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
DAG_FILE = Path(__file__).with_name("approval_dags.py")
DAG_ID = "ctcd_e2e_approval"
MODEL = "churn-approval"
PORTS = (9760, 9779)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, api_server: ApiServer,
          model_factory: Any) -> Iterator[dict[str, Any]]:
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("approval")
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    champion = model_factory(name=MODEL, kind="logistic_regression")
    candidate = model_factory(name=MODEL, kind="logistic_regression")
    MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).set_registered_model_alias(
        MODEL, "champion", champion.version)
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "CTCD_HOME": str(tmp / "ctcd"), "CTCD_SERVER_PORT_RANGE": json.dumps(PORTS),
           "CTCD_E2E_MODEL": MODEL, "CTCD_E2E_VERSION": candidate.version,
           "CTCD_E2E_RUN_ID": candidate.run_id, "CTCD_E2E_CHAMPION": champion.version,
           "CTCD_E2E_MARKER": str(tmp / "marker"),
           "AIRFLOW__API__BASE_URL": api_server.url}
    deployer = LocalDeployer(Settings(home=tmp / "ctcd", server_port_range=PORTS))
    yield {"env": env, "champion": champion, "candidate": candidate, "deployer": deployer,
           "marker": tmp / "marker"}
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=30, force=True)


def _answer(api: ApiServer, proc: subprocess.Popen[str], answer: str) -> dict[str, Any]:
    """Wait for the approval to be asked, check its evidence, answer it over the REST API;
    returns the detail as asked."""
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stdout.read()[-4000:] if proc.stdout else ""
        assert time.monotonic() < deadline, "the approval was never asked"
        listed = httpx.get(f"{api.url}/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails",
                           params={"state": "awaiting_input"}, headers=api.headers())
        waiting = [d for d in listed.json().get("hitl_details", [])
                   if not d.get("response_received")]
        if waiting:
            break
        time.sleep(1)
    [detail] = waiting
    ti = detail["task_instance"]
    assert (ti["task_id"], ti["state"]) == ("approve", "awaiting_input")
    response = httpx.patch(
        f"{api.url}/api/v2/dags/{DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/approve/"
        f"{ti['map_index']}/hitlDetails",
        json={"chosen_options": [answer], "params_input": {}}, headers=api.headers())
    assert response.status_code == 200, response.text
    return dict(detail)


def _run(setup: dict[str, Any], api: ApiServer, answer: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
                            env=setup["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        detail = _answer(api, proc, answer)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = re.search(rf"DagRun Finished: dag_id={DAG_ID},.*?state=(\w+)", output)
    assert finished is not None and finished.group(1) == "success", output[-3000:]
    return detail, output


def test_approve_promotes_with_the_evidence_shown(setup: dict[str, Any],
                                                  api_server: ApiServer) -> None:
    detail, output = _run(setup, api_server, "Approve")
    assert f"Version {setup['candidate'].version} approved by admin" in output
    candidate = setup["candidate"]
    assert detail["subject"] == f"Promote {MODEL} version {candidate.version} to champion?"
    body = detail["body"]
    assert f"Version {candidate.version} serves on model server" in body
    assert "| roc_auc (gate) | 0.9100 | 0.8800 |" in body  # candidate vs champion
    assert f"**Reject** rolls it back: champion version {setup['champion'].version}" in body
    assert "/plugin/deployments/ctcd/deployments/" in body  # the deployment's page
    assert setup["marker"].read_text() == "promoted"
    from mlflow import MlflowClient

    tags = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_model_version(
        MODEL, candidate.version).tags
    assert tags["ctcd.approval"].startswith("approved by admin")


def test_reject_skips_promote_and_the_champion_serves_again(setup: dict[str, Any],
                                                            api_server: ApiServer) -> None:
    setup["marker"].unlink(missing_ok=True)
    _, output = _run(setup, api_server, "Reject")
    assert not setup["marker"].exists()
    assert "rejected by admin" in output
    [handle] = setup["deployer"].find_model_server(running=True)
    assert handle.model_version == setup["champion"].version
