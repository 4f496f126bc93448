"""A server's record is enough to restart it as deployed, and holds no secret.

The end-to-end test SIGKILLs a real server that loads ``models:/`` from a real MLflow
tracking server, then runs ``ctcd models start`` from a plain shell (a subprocess with no
MLflow or ctcd variables at all) and checks that it answers. The fast test starts a stand-in
server that records the environment it was given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.oracle import pyfunc_predictions

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import ServerStartFailed
from ctcd.services import ServiceStatus
from ctcd.settings import Settings
from ctcd.stack.processes import free_port


def port_range() -> tuple[int, int]:
    low = free_port()
    return low, min(low + 50, 65535)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ctcd"
    yield path
    backend = LocalDeployer(Settings(home=path))
    for handle in backend.find_model_server():
        backend.delete_model_server(handle.service_id, timeout=10, force=True)


@pytest.mark.e2e
def test_sigkilled_server_restarts_from_a_plain_shell_with_its_recorded_tracking_server(
    home: Path, mlflow_server: str, churn_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deploying process reaches MLflow with credentials in the URI (the test server
    # ignores them); the record must keep the address and drop the credentials.
    with_credentials = mlflow_server.replace("http://", "http://ci-user:s3cr3t-pw@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_credentials)
    monkeypatch.delenv("CTCD_MLFLOW_TRACKING_URI", raising=False)
    low, high = port_range()
    backend = LocalDeployer(Settings(home=home, server_port_range=(low, high)))
    handle = backend.deploy_model(
        DeploymentConfig(model_name=churn_model.name, model_uri=churn_model.uri,
                         model_version=churn_model.version, mlflow_run_id=churn_model.run_id),
        timeout=240,
    )
    assert handle.is_running()
    record = backend.record(handle.service_id)
    assert record.config.tracking_uri == mlflow_server
    stored = b"".join(p.read_bytes() for p in (home / "servers").glob("registry.db*"))
    assert b"s3cr3t-pw" not in stored and b"ci-user" not in stored

    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while backend.status(handle.service_id) is not ServiceStatus.UNREACHABLE:
        assert time.monotonic() < deadline, "the killed server still reads as answering"
        time.sleep(0.2)

    plain = {k: v for k, v in os.environ.items()
             if not k.startswith(("MLFLOW_", "CTCD_"))}
    plain["CTCD_HOME"] = str(home)
    started = subprocess.run(
        [sys.executable, "-m", "ctcd.cli", "models", "start", handle.server_name,
         "--timeout", "240"],
        env=plain, capture_output=True, text=True, timeout=300, check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert handle.endpoint in started.stdout

    assert backend.status(handle.service_id) is ServiceStatus.RUNNING
    rows = churn_model.example  # both classes among its answers
    assert handle.predict(rows) == pyfunc_predictions(churn_model.uri, rows)
    restarted = backend.record(handle.service_id)
    assert restarted.pid != record.pid and restarted.config == record.config
    described = json.loads(subprocess.run(
        [sys.executable, "-m", "ctcd.cli", "models", "describe", handle.service_id, "--json"],
        env=plain, capture_output=True, text=True, timeout=120, check=True,
    ).stdout)
    assert described["details"]["tracking_uri"] == mlflow_server
    assert [v["version"] for v in described["versions"]] == [churn_model.version]


ENV_DUMP = (
    "import json, os, sys, time\n"
    "path = os.environ['CTCD_TEST_ENV_DUMP']\n"
    "open(path + '.tmp', 'w').write(json.dumps(dict(os.environ)))\n"
    "os.replace(path + '.tmp', path)\n"
    "time.sleep(600)\n"
)


def _started_env(dump: Path) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while not dump.exists():
        assert time.monotonic() < deadline, "the stand-in server never started"
        time.sleep(0.1)
    env: dict[str, str] = json.loads(dump.read_text())
    dump.unlink()
    return env


def test_restart_uses_the_recorded_server_options_and_demands_the_token_it_never_stored(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "env.json"
    monkeypatch.setenv("CTCD_TEST_ENV_DUMP", str(dump))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://deployer:pw@mlflow.internal:5000")
    monkeypatch.setenv("CTCD_SERVER_MAX_BATCH_ROWS", "256")
    monkeypatch.setenv("CTCD_SERVER_TOKEN", "prediction-token-123")
    for name in [n for n in os.environ if n.startswith("CTCD_SERVER_")]:
        if name not in ("CTCD_SERVER_MAX_BATCH_ROWS", "CTCD_SERVER_TOKEN"):
            monkeypatch.delenv(name)  # only the options this test sets
    backend = LocalDeployer(Settings(home=home, server_port_range=port_range()),
                            server_command=[sys.executable, "-c", ENV_DUMP])
    handle = backend.deploy_model(
        DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="1"),
        wait=False,
    )
    first = _started_env(dump)
    assert first["CTCD_SERVER_MAX_BATCH_ROWS"] == "256"
    assert first["CTCD_SERVER_TOKEN"] == "prediction-token-123"
    # The deploying process's own URI (with its credentials) serves the first start.
    assert first["MLFLOW_TRACKING_URI"] == "http://deployer:pw@mlflow.internal:5000"
    config = backend.record(handle.service_id).config
    assert config.server_options == {"max_batch_rows": "256"} and config.requires_token
    assert config.tracking_uri == "http://mlflow.internal:5000"
    stored = b"".join(p.read_bytes() for p in (home / "servers").glob("registry.db*"))
    assert b"prediction-token-123" not in stored and b"pw@" not in stored
    backend.stop_model_server(handle.service_id, timeout=10, force=True)

    # Someone else starts it: another environment, without the token.
    for name in ("MLFLOW_TRACKING_URI", "CTCD_SERVER_MAX_BATCH_ROWS", "CTCD_SERVER_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("CTCD_SERVER_BATCHING", "false")
    with pytest.raises(ServerStartFailed, match="CTCD_SERVER_TOKEN"):
        backend.start_model_server(handle.service_id, wait=False)
    assert backend.record(handle.service_id).desired_state == "stopped"

    monkeypatch.setenv("CTCD_SERVER_TOKEN", "prediction-token-123")
    backend.start_model_server(handle.service_id, wait=False)
    again = _started_env(dump)
    assert again["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"
    assert again["CTCD_SERVER_MAX_BATCH_ROWS"] == "256"
    assert "CTCD_SERVER_BATCHING" not in again  # not how it was deployed
    assert again["CTCD_SERVER_TOKEN"] == "prediction-token-123"
