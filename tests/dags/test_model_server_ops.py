"""The model_server_ops DAG, run with ``dag.test()`` against live model servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.local import LocalDeployer
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
                                     "shadow"]
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


def test_rollback_stop_start_through_the_dag(
    ops_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_factory: Any
) -> None:
    home = tmp_path / "ctcd"
    monkeypatch.setenv("CTCD_HOME", str(home))
    monkeypatch.setenv("CTCD_SERVER_PORT_RANGE", json.dumps(list(PORTS)))
    backend = LocalDeployer(Settings(home=home, server_port_range=PORTS))
    first = model_factory(name=MODEL, kind="logistic_regression")
    second = model_factory(name=MODEL, kind="logistic_regression")
    try:
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
    finally:
        for h in backend.find_model_server():
            backend.delete_model_server(h.service_id, timeout=10, force=True)
