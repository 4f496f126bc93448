"""`ctcd models ...` against a live model server (real process on loopback)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli import invoker

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.services import ServiceHandle
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
PORTS = (9600, 9649)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, churn_model: Any
) -> Iterator[tuple[Path, ServiceHandle]]:
    home = tmp_path_factory.mktemp("cli")
    backend = LocalDeployer(Settings(home=home, server_port_range=PORTS))
    handle = backend.deploy_model(
        DeploymentConfig(model_name=churn_model.name, model_uri=churn_model.uri,
                         model_version=churn_model.version, dag_id="ct", task_id="deploy"),
        timeout=180,
    )
    yield home, handle
    for h in backend.find_model_server():
        backend.delete_model_server(h.service_id, timeout=10, force=True)


@pytest.fixture
def ctcd(live: tuple[Path, ServiceHandle], monkeypatch: pytest.MonkeyPatch) -> Any:
    return invoker(live[0], PORTS, monkeypatch)


def test_list_describe_get_url_logs(
    ctcd: Any, live: tuple[Path, ServiceHandle], churn_model: Any
) -> None:
    handle = live[1]
    table = ctcd("models", "list")
    assert handle.service_id[:8] in table and "running" in table and handle.endpoint in table
    [row] = json.loads(ctcd("models", "list", "--json", "--running", "--dag-id", "ct"))
    assert row["service_id"] == handle.service_id and row["status"] == "running"
    assert json.loads(ctcd("models", "list", "--json", "--model-version", "999")) == []

    assert len(handle.predict(churn_model.example.head(3))) == 3  # so latencies exist
    described = json.loads(ctcd("models", "describe", handle.server_name, "--json"))
    assert described["status"] == "running" and described["desired_state"] == "running"
    assert [v["weight"] for v in described["versions"]] == [1.0]
    assert isinstance(described["versions"][0]["latency_ms_p99"], float)  # raw in JSON
    assert described["history"][0]["outcome"] == "succeeded"
    assert described["details"]["port"] == int(handle.endpoint.rsplit(":", 1)[1])
    lineage = described["lineage"]  # the serving version back to its MLflow run
    assert lineage["error"] is None, lineage
    assert [s["kind"] for s in lineage["steps"]][:2] == ["version", "run"]
    assert lineage["steps"][1]["details"]["run_id"] == churn_model.run_id
    text = ctcd("models", "describe", handle.service_id[:8])
    assert "loaded versions" in text and "100%" in text and " ms" in text
    assert f"lineage of version {handle.model_version}" in text and "MLflow run" in text
    assert not re.search(r"\d\.\d{4,}", text), text  # no raw floats for people

    assert ctcd("models", "get-url", handle.service_id).strip() == handle.endpoint
    assert "listening on" in ctcd("models", "logs", handle.server_name, "--tail", "5")


def test_stop_start_and_errors(ctcd: Any, live: tuple[Path, ServiceHandle]) -> None:
    handle = live[1]
    ctcd("models", "stop", handle.server_name, "--timeout", "30")
    assert not handle.is_running()
    assert "unreachable" in ctcd("models", "list")
    assert json.loads(ctcd("models", "list", "--json", "--running")) == []
    assert handle.endpoint in ctcd("models", "start", handle.server_name, "--timeout", "180")
    assert handle.is_running()
    assert "No model server matches" in ctcd("models", "describe", "nope", code=1)


def test_delete_forgets_the_server(ctcd: Any, live: tuple[Path, ServiceHandle]) -> None:
    handle = live[1]
    ctcd("models", "delete", handle.service_id, "--force")
    assert not handle.is_running()
    assert ctcd("models", "list").strip() == "no model servers"
