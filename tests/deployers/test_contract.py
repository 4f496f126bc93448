"""The deployer contract (no servers needed): backends satisfy it, callers need nothing
beyond it, the record keeps no credentials, and the packages import without cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcd.cli import build
from ctcd.deployers import (
    DeploymentConfig,
    ModelDeployer,
    ScorerConfig,
    SupportsRollback,
    SupportsScorers,
    get_deployer,
    redact_uri,
    scorers_of,
)
from ctcd.deployers.cli import milliseconds, percent
from ctcd.deployers.examples.static import StaticDeployer
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import InvalidParams
from ctcd.settings import Settings
from ctcd.stack.processes import free_port

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "ctcd"
STATIC = "ctcd.deployers.examples.static:StaticDeployer"


def test_backends_satisfy_the_contract_and_declare_their_capabilities(tmp_path: Path) -> None:
    local = LocalDeployer(Settings(home=tmp_path))
    static = StaticDeployer(Settings(home=tmp_path), servers={})
    assert isinstance(local, ModelDeployer) and isinstance(static, ModelDeployer)
    assert isinstance(local, SupportsRollback)
    assert not isinstance(static, SupportsRollback)
    kubernetes = KubernetesDeployer(Settings(home=tmp_path))
    assert isinstance(kubernetes, ModelDeployer) and isinstance(kubernetes, SupportsRollback)
    assert isinstance(local, SupportsScorers) and isinstance(kubernetes, SupportsScorers)
    assert not isinstance(static, SupportsScorers)
    assert scorers_of(local) is local
    with pytest.raises(InvalidParams, match=f"{static.name!r} cannot run streaming scorers"):
        scorers_of(static)


def test_a_scorer_config_records_no_secret_and_refuses_options_the_backend_sets() -> None:
    config = ScorerConfig(name="s", model_uri="models:/m@champion", stream="in",
                          redis_url="redis://:hunter2@redis:6379/0",
                          tracking_uri="http://u:pw@mlflow:5000", options={"batch_size": 64})
    assert config.redis_url == "redis://redis:6379/0"
    assert config.tracking_uri == "http://mlflow:5000"
    assert config.options == {"batch_size": "64"}
    assert ScorerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for managed in ("consumer", "redis_url", "health_port"):
        with pytest.raises(InvalidParams, match=f"scorer option '{managed}' is not one"):
            ScorerConfig(name="s", model_uri="models:/m/1", stream="in",
                         options={managed: "x"})
    with pytest.raises(InvalidParams, match="replicas must be at least 1"):
        ScorerConfig(name="s", model_uri="models:/m/1", stream="in", replicas=0)


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("http://user:pw@mlflow:5000/path", "http://mlflow:5000/path"),
        ("https://token@mlflow.example.com", "https://mlflow.example.com"),
        ("http://u:p@[::1]:5000", "http://[::1]:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("databricks", "databricks"),
    ],
)
def test_uris_are_recorded_without_credentials(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted
    config = DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="1",
                              tracking_uri=uri)
    assert config.tracking_uri == redacted
    assert DeploymentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_services_import_nothing_of_the_deployers() -> None:
    """``ctcd.deployers`` builds handles; ``ctcd.services`` must not import it back, not
    even lazily inside a function."""
    for path in (PACKAGE / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not [n for n in names if n.startswith("ctcd.deployers")], path
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ctcd.services; "
         "print(sorted(m for m in sys.modules if m.startswith('ctcd.')))"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "ctcd.deployers" not in loaded and "ctcd.services.handle" in loaded


def test_deployers_do_not_depend_on_the_demo_stack() -> None:
    for path in (PACKAGE / "deployers").rglob("*.py"):
        assert "ctcd.stack" not in path.read_text(), path


def test_cli_and_operator_work_with_a_backend_that_has_only_the_base_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static example has no rollback and its one server is down: every command still
    answers clearly."""
    from airflow.sdk.exceptions import AirflowFailException

    from ctcd.operators import ModelServerLifecycleOperator

    monkeypatch.setenv("CTCD_HOME", str(tmp_path))
    monkeypatch.setenv("CTCD_DEPLOYER", STATIC)
    monkeypatch.setenv("CTCD_STATIC_SERVERS", json.dumps({"m": f"http://127.0.0.1:{free_port()}"}))
    assert isinstance(get_deployer(), StaticDeployer)
    runner, app = CliRunner(), build()

    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(r["service_id"], r["status"]) for r in json.loads(listed.output)] == [
        ("static:m", "unreachable")]
    described = runner.invoke(app, ["models", "describe", "m", "--json"])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["status"] == "unreachable" and info["versions"] == [] and info["history"] == []
    rollback = runner.invoke(app, ["models", "rollback", "m"])
    assert rollback.exit_code == 1 and "cannot roll back" in rollback.output

    operator = ModelServerLifecycleOperator(task_id="rb", action="rollback", service="m")
    with pytest.raises(AirflowFailException, match="cannot roll back"):
        operator.execute({})

    for command in (["list"], ["start", "s"], ["reload", "s"], ["logs", "s"]):
        streaming = runner.invoke(app, ["streaming", *command])
        assert streaming.exit_code == 1, streaming.output
        assert f"deployer {STATIC!r} cannot run streaming scorers" in streaming.output


@pytest.mark.parametrize(
    ("value", "shown"),
    [(26.565634300038713, "26.6 ms"), (3.14159, "3.14 ms"), (1234.5, "1,234 ms"),
     (None, "-")],
)
def test_latencies_are_shown_with_sensible_precision(value: float | None, shown: str) -> None:
    assert milliseconds(value) == shown


@pytest.mark.parametrize(
    ("weight", "shown"), [(1.0, "100%"), (0.125, "12.5%"), (0.1, "10%"), (0.0, "0%")]
)
def test_weights_are_shown_as_percentages(weight: float, shown: str) -> None:
    assert percent(weight) == shown
