"""Fast checks (no servers): strategy options, backend selection, handle serialization."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ctcd.deployers import BlueGreen, Canary, DeploymentConfig, Replace, get_deployer
from ctcd.deployers import resolve_strategy as resolve
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import InvalidDeployer, InvalidParams, InvalidStrategy
from ctcd.services import ServiceHandle, ServiceStatus
from ctcd.settings import Settings


def test_strategies_from_names_mappings_and_objects() -> None:
    assert resolve("replace") == Replace()
    assert resolve("blue-green") == BlueGreen()
    assert resolve({"name": "canary", "steps": [0.1, 0.3], "interval_seconds": 5}) == Canary(
        steps=(0.1, 0.3), interval_seconds=5
    )
    canary = Canary(steps=(0.5,))
    assert resolve(canary) is canary


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rolling", "unknown strategy 'rolling'"),
        ({"name": "canary", "stepz": [0.1]}, r"unknown option\(s\) \['stepz'\]"),
        ({"name": "canary", "steps": [0.5, 0.2]}, "increasing weights"),
        ({"name": "canary", "steps": [1.0]}, "between 0 and 1"),
        (42, "must be a name"),
    ],
)
def test_bad_strategies_say_what_is_wrong(spec: object, message: str) -> None:
    with pytest.raises(InvalidStrategy, match=message):
        resolve(spec)  # type: ignore[arg-type]


def test_deployment_config_rejects_empty_fields() -> None:
    with pytest.raises(InvalidParams, match="model_version"):
        DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="")
    cfg = DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="1")
    assert cfg.server_name == "m"
    assert DeploymentConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


def test_get_deployer_local_dotted_path_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_HOME", str(tmp_path))
    monkeypatch.delenv("CTCD_DEPLOYER", raising=False)
    assert isinstance(get_deployer(), LocalDeployer)
    custom = get_deployer("ctcd.deployers.examples.static:StaticDeployer")
    assert custom.name == "ctcd.deployers.examples.static:StaticDeployer"
    with pytest.raises(InvalidDeployer, match="not a known backend"):
        get_deployer("nomad")  # kubernetes is built in now (tests/deployers/kubernetes)
    with pytest.raises(InvalidDeployer, match="cannot import"):
        get_deployer("no_such_module:Thing")
    with pytest.raises(InvalidDeployer, match="lacks methods"):
        get_deployer("ctcd.settings:Settings")


def test_find_on_a_fresh_home_is_a_pure_query(tmp_path: Path) -> None:
    backend = LocalDeployer(Settings(home=tmp_path / "home"))
    assert backend.find_model_server(running=True) == []
    assert not (tmp_path / "home").exists()


def _handle(endpoint: str) -> ServiceHandle:
    return ServiceHandle(
        service_id="abc", backend="local", server_name="m", model_name="m", model_version="3",
        model_uri="models:/m/3", endpoint=endpoint, dag_id="d", run_id="r", task_id="t",
        mlflow_run_id="run", strategy="canary", deployed_at="2026-01-01T00:00:00+00:00",
    )


def test_handle_round_trips_through_airflow_serde_and_rechecks_status() -> None:
    from airflow.sdk.serde import deserialize, serialize

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    handle = _handle(endpoint)
    data = json.loads(json.dumps(serialize(handle)))
    assert data["__classname__"] == "ctcd.services.handle.ServiceHandle"
    assert data["__version__"] == ServiceHandle.__version__
    assert "token" not in json.dumps(data)
    assert deserialize(data) == handle
    assert handle.status() is ServiceStatus.UNREACHABLE
    assert not handle.is_running()


def test_handle_from_a_newer_writer_is_refused() -> None:
    with pytest.raises(TypeError, match="newer"):
        ServiceHandle.deserialize(_handle("http://x").serialize(), ServiceHandle.__version__ + 1)
