"""The model_server_ops DAG, run with ``dag.test()`` against live model servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
from ctcd.deployers.traffic import NoRolloutInProgress
from ctcd.errors import RolledBack
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "model_server_ops.py"
PORTS = (9650, 9699)
MODEL = "churn-ops"


@pytest.fixture
def ops_dag(airflow_home: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["model_server_ops"]


def test_params_form_offers_the_actions(ops_dag: Any) -> None:
    action = ops_dag.params.get_param("action")
    assert action.schema["enum"] == ["list", "start", "stop", "delete", "rollback", "promote",
                                     "shadow", "promote_shadow", "drop_shadow"]
    assert action.value == "list"


@pytest.mark.parametrize("service", ["37985631", "1234e567", None])
def test_service_names_render_as_given(ops_dag: Any, service: str | None) -> None:
    # An id prefix of hex digits only must stay text: rendered as a native object it became
    # an int (or a float for "1234e567") and the stop action failed on about 1 id in 40.
    task = ops_dag.get_task("apply")
    params = {"action": "stop", "service": service, "model_name": None, "timeout": 5,
              "force": False, "model_version": None, "shadow_options": {"min_requests": 5}}
    task.render_template_fields({"params": params})
    assert task.service == (service or "")
    assert json.loads(task.shadow_options) == {"min_requests": 5}
    assert task.model_name == ""


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalDeployer]:
    """The local deployer the DAG's tasks use (its home and ports); its servers are deleted
    after the test."""
    home = tmp_path / "ctcd"
    monkeypatch.setenv("CTCD_HOME", str(home))
    monkeypatch.setenv("CTCD_SERVER_PORT_RANGE", json.dumps(list(PORTS)))
    backend = LocalDeployer(Settings(home=home, server_port_range=PORTS))
    yield backend
    for h in backend.find_model_server():
        backend.delete_model_server(h.service_id, timeout=10, force=True)


def test_rollback_stop_start_through_the_dag(
    ops_dag: Any, backend: LocalDeployer, model_factory: Any
) -> None:
    first = model_factory(name=MODEL, kind="logistic_regression")
    second = model_factory(name=MODEL, kind="logistic_regression")
    for model in (first, second):
        handle = backend.deploy_model(
            DeploymentConfig(model_name=MODEL, model_uri=model.uri,
                             model_version=model.version), timeout=180)
    assert handle.model_version == second.version

    def run(**conf: Any) -> str:
        dagrun = ops_dag.test(run_conf={"model_name": MODEL, "timeout": 120, **conf})
        return str(dagrun.state)

    assert run(action="rollback") == "success"
    [now] = backend.find_model_server(running=True)
    assert now.model_version == first.version
    with backend.admin(now.service_id) as admin:
        assert admin.serving() == {first.version: 1.0}

    assert run(action="stop", service=now.service_id[:8]) == "success"
    assert backend.find_model_server(running=True) == []
    assert run(action="start") == "success"
    assert backend.find_model_server(running=True)[0].endpoint == now.endpoint
    assert run(action="list") == "success"
    # a shadow of a registered version with no traffic to compare: inconclusive, so it
    # fails and the serving version stays; a version that is not registered fails too
    shadow = {"min_requests": 5, "max_seconds": 2, "poll_seconds": 0.2}
    assert run(action="shadow", model_version=second.version,
               shadow_options=shadow) == "failed"
    assert run(action="shadow", model_version="999", shadow_options=shadow) == "failed"
    with backend.admin(now.service_id) as admin:
        assert admin.serving() == {first.version: 1.0}
        assert set(admin.versions()) == {first.version}
    [last] = backend.history(now.service_id, limit=1)
    assert (last.strategy, last.outcome) == ("shadow", "failed")
    assert last.config.model_version == "999"
    [shadowed] = [e for e in backend.history(now.service_id, limit=3)
                  if e.config.model_version == second.version and e.strategy == "shadow"]
    assert "inconclusive" in (shadowed.message or "")
    assert run(action="delete", service="no-such-server") == "failed"


def test_a_shadow_is_ended_by_hand_through_the_dag_and_never_as_a_canary(
    ops_dag: Any, backend: LocalDeployer, model_factory: Any
) -> None:
    models = [model_factory(name=f"{MODEL}-shadow", kind="logistic_regression")
              for _ in range(3)]
    live, dropped, promoted = (m.version for m in models)
    waiting = {"name": "shadow", "min_requests": 100_000, "max_seconds": 120,
               "poll_seconds": 0.2}

    def run(**conf: Any) -> str:
        dagrun = ops_dag.test(run_conf={"model_name": f"{MODEL}-shadow", "timeout": 120,
                                        **conf})
        return str(dagrun.state)

    def shadow(model: Any) -> dict[str, Any]:
        """A shadow deploy waiting for its analysis on a thread, as `ctcd models shadow`."""
        ended: dict[str, Any] = {}

        def deploy() -> None:
            try:
                ended["handle"] = backend.deploy_model(DeploymentConfig(
                    model_name=model.name, model_uri=model.uri, model_version=model.version),
                    strategy=waiting, timeout=150)
            except Exception as err:  # the test reads how it ended
                ended["error"] = err

        ended["thread"] = thread = threading.Thread(target=deploy, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while backend.describe_model_server(handle.service_id).shadow is None:
            assert thread.is_alive() and time.monotonic() < deadline, ended
            time.sleep(0.1)
        return ended

    def serving() -> dict[str, float]:
        with backend.admin(handle.service_id) as admin:
            return dict(admin.serving())

    handle = backend.deploy_model(DeploymentConfig(
        model_name=models[0].name, model_uri=models[0].uri, model_version=live), timeout=180)
    # nothing under trial: a rollback that may only drop one changes nothing
    with pytest.raises(NoRolloutInProgress):
        backend.rollback_model_server(handle.service_id, rollout_only=True)
    assert serving() == {live: 1.0}

    first = shadow(models[1])
    assert run(action="promote") == "failed"  # a shadow is no canary
    assert run(action="rollback") == "failed"
    assert backend.describe_model_server(handle.service_id).shadow is not None
    assert run(action="drop_shadow") == "success"
    first["thread"].join(30)
    assert isinstance(first.get("error"), RolledBack), first
    assert serving() == {live: 1.0}
    with backend.admin(handle.service_id) as admin:
        assert dropped not in admin.versions()  # unloaded
    assert run(action="drop_shadow") == "failed"  # none now: nothing else is rolled back
    assert serving() == {live: 1.0}

    second = shadow(models[2])
    assert run(action="promote_shadow") == "success"
    second["thread"].join(30)
    assert second["handle"].model_version == promoted, second
    assert serving() == {promoted: 1.0}
    with backend.admin(handle.service_id) as admin:
        assert set(admin.versions()) == {promoted}
