"""A server's record is enough to restart it as deployed: SIGKILL a real server that loads
``models:/`` from a real MLflow tracking server, then ``ctcd models start`` it from a plain
shell (a subprocess with no MLflow variables at all) and check that it answers."""

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

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.services import ServiceStatus
from ctcd.settings import Settings
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.e2e


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
    predictions = handle.predict(churn_model.example.head(5))
    assert len(predictions) == 5 and set(predictions) <= {0, 1}
    restarted = backend.record(handle.service_id)
    assert restarted.pid != record.pid and restarted.config == record.config
    described = json.loads(subprocess.run(
        [sys.executable, "-m", "ctcd.cli", "models", "describe", handle.service_id, "--json"],
        env=plain, capture_output=True, text=True, timeout=120, check=True,
    ).stdout)
    assert described["details"]["tracking_uri"] == mlflow_server
    assert [v["version"] for v in described["versions"]] == [churn_model.version]
