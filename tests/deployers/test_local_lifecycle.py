"""The local deployer against real model-server processes: deploy, find, kill, start, stop,
delete, logs, ports, idempotency and concurrency."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.deployers.conftest import PORTS
from tests.oracle import pyfunc_predictions

from ctcd.deployers import DeploymentConfig, load_last_service
from ctcd.deployers.local import LocalDeployer
from ctcd.errors import ModelServerNotFound, PortUnavailable, ServerStartFailed
from ctcd.services import ServiceHandle, ServiceStatus
from ctcd.settings import Settings

pytestmark = pytest.mark.e2e


def config(model: Any, **lineage: str) -> DeploymentConfig:
    return DeploymentConfig(
        model_name=model.name, model_uri=model.uri, model_version=model.version,
        mlflow_run_id=getattr(model, "run_id", None), **lineage,
    )


def server_processes(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "ctcd.serving" in cmd and str(port) in cmd:
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def served(module_deployer: LocalDeployer, churn_model: Any) -> ServiceHandle:
    """One real server for this module's lifecycle tests, which run in order on it."""
    lineage = {"dag_id": "ct", "run_id": "r1", "task_id": "deploy"}
    return module_deployer.deploy_model(config(churn_model, **lineage), timeout=180)


def test_deploy_serves_and_find_reports_observed_state(
    module_deployer: LocalDeployer, served: ServiceHandle, churn_model: Any
) -> None:
    deployer, handle = module_deployer, served
    assert handle.is_running()
    assert handle.status() is ServiceStatus.RUNNING
    rows = churn_model.example  # both classes among its answers
    assert handle.predict(rows) == pyfunc_predictions(churn_model.uri, rows)

    # the handle is a plain value: it survives its XCom round trip
    copy = ServiceHandle.deserialize(json.loads(json.dumps(handle.serialize())), 1)
    assert copy == handle and copy.is_running()

    assert [h.service_id for h in deployer.find_model_server(running=True)] == [handle.service_id]
    for filters in ({"dag_id": "ct", "task_id": "deploy"}, {"model_version": churn_model.version},
                    {"model_uri": churn_model.uri}, {"run_id": "r1"},
                    {"service_id": handle.service_id}, {"model_name": churn_model.name}):
        assert len(deployer.find_model_server(**filters)) == 1, filters
    assert deployer.find_model_server(dag_id="other") == []
    assert deployer.find_model_server(model_version="999") == []


def test_load_last_service_finds_the_handle_of_a_task(
    module_deployer: LocalDeployer, served: ServiceHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_HOME", str(module_deployer.settings.home))
    monkeypatch.delenv("CTCD_DEPLOYER", raising=False)
    assert load_last_service("ct", "deploy", running=True) == served
    with pytest.raises(ModelServerNotFound, match=r"ct\.train"):
        load_last_service("ct", "train")


def test_retried_deploy_of_the_serving_version_changes_nothing(
    module_deployer: LocalDeployer, served: ServiceHandle, churn_model: Any
) -> None:
    pid = module_deployer.record(served.service_id).pid
    lineage = {"dag_id": "ct", "run_id": "r1", "task_id": "deploy"}
    again = module_deployer.deploy_model(config(churn_model, **lineage), strategy="blue_green")
    assert again == served
    assert module_deployer.record(served.service_id).pid == pid
    assert len(module_deployer.find_model_server()) == 1
    outcomes = [d.outcome for d in module_deployer.history(served.service_id)]
    assert outcomes == ["unchanged", "succeeded"]


def test_sigkill_reads_not_running_then_start_restores_same_id_and_port(
    module_deployer: LocalDeployer, served: ServiceHandle, churn_model: Any
) -> None:
    deployer = module_deployer
    record = deployer.record(served.service_id)
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while deployer.status(served.service_id) is not ServiceStatus.UNREACHABLE:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert deployer.find_model_server(running=True) == []  # observed, not stored, state
    [stale] = deployer.find_model_server()
    assert stale == served
    assert not stale.is_running()
    assert deployer.record(served.service_id).desired_state == "running"  # find wrote nothing

    restarted = deployer.start_model_server(served.service_id, timeout=180)
    assert (restarted.service_id, restarted.endpoint) == (served.service_id, served.endpoint)
    assert restarted.is_running()
    assert restarted.model_version == churn_model.version
    assert len(server_processes(record.port)) == 1


def test_stop_logs_port_kept_then_start(
    module_deployer: LocalDeployer, served: ServiceHandle
) -> None:
    deployer = module_deployer
    port = deployer.record(served.service_id).port
    deployer.stop_model_server(served.service_id, timeout=30)
    assert not served.is_running()
    assert server_processes(port) == []
    assert deployer.record(served.service_id).desired_state == "stopped"

    logs = list(deployer.get_logs(served.service_id))
    assert sum("listening on" in line for line in logs) == 2  # started, restarted
    assert len(list(deployer.get_logs(served.service_id, tail=1))) == 1
    assert list(deployer.get_logs(served.service_id, follow=True)) == logs  # stopped: ends

    # the port stays with the server; a squatter on it is reported, not silently replaced
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # port may be TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PortUnavailable, match=str(port)):
            deployer.start_model_server(served.service_id, timeout=30)
    assert deployer.start_model_server(served.service_id, timeout=180).endpoint == served.endpoint


def test_delete_stops_and_forgets(module_deployer: LocalDeployer, served: ServiceHandle) -> None:
    port = module_deployer.record(served.service_id).port
    module_deployer.delete_model_server(served.service_id, timeout=30)
    assert module_deployer.find_model_server() == []
    assert server_processes(port) == []
    assert not served.is_running()
    with pytest.raises(ModelServerNotFound):
        module_deployer.start_model_server(served.service_id)


def test_start_timeout_stops_the_server_and_never_reads_running(tmp_path: Path) -> None:
    never_ready = [sys.executable, "-c", "import time; time.sleep(600)"]
    backend = LocalDeployer(_settings(tmp_path), server_command=never_ready)
    cfg = DeploymentConfig(model_name="slow", model_uri="models:/slow/1", model_version="1")
    started = time.monotonic()
    with pytest.raises(ServerStartFailed, match="not ready within the timeout"):
        backend.deploy_model(cfg, timeout=2)
    assert time.monotonic() - started < 20
    [handle] = backend.find_model_server()
    record = backend.record(handle.service_id)
    assert record.desired_state == "stopped" and "not ready" in (record.last_error or "")
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == "zombie"
    assert backend.find_model_server(running=True) == []
    assert [d.outcome for d in backend.history(handle.service_id)] == ["failed"]


def test_server_that_exits_at_start_fails_with_its_log(tmp_path: Path) -> None:
    crashing = [sys.executable, "-c", "import sys; print('cannot load model'); sys.exit(3)"]
    backend = LocalDeployer(_settings(tmp_path), server_command=crashing)
    cfg = DeploymentConfig(model_name="bad", model_uri="models:/bad/1", model_version="1")
    with pytest.raises(ServerStartFailed, match="cannot load model"):
        backend.deploy_model(cfg, timeout=30)


def test_concurrent_deploys_serialize_into_one_server(
    tmp_path: Path, mlflow_server: str, model_factory: Any
) -> None:
    """Two processes (think: two Airflow tasks) deploy two versions of one model at once."""
    a = model_factory(name="churn-concurrent", kind="logistic_regression")
    b = model_factory(name="churn-concurrent", kind="logistic_regression")
    home = tmp_path / "ctcd"
    script = (
        "import sys\n"
        "from ctcd.deployers import DeploymentConfig\n"
        "from ctcd.deployers.local import LocalDeployer\n"
        "from ctcd.settings import Settings\n"
        "d = LocalDeployer(Settings(home=sys.argv[1], server_port_range=(9100, 9499)))\n"
        "h = d.deploy_model(DeploymentConfig(model_name='churn-concurrent',"
        " model_uri=sys.argv[2], model_version=sys.argv[3]), strategy='replace', timeout=240)\n"
        "print(h.service_id)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(home), m.uri, m.version],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for m in (a, b)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert len({r[0].strip() for r in results}) == 1  # both landed in the same server

    backend = LocalDeployer(Settings(home=home, server_port_range=PORTS))
    try:
        [handle] = backend.find_model_server(running=True)
        history = backend.history(handle.service_id)
        last = next(d for d in history if d.outcome == "succeeded")
        assert handle.model_version == last.config.model_version  # last finished wins
        with backend.admin(handle.service_id) as admin:
            assert admin.serving() == {last.config.model_version: 1.0}
        assert len(server_processes(backend.record(handle.service_id).port)) == 1
    finally:
        for h in backend.find_model_server():
            backend.delete_model_server(h.service_id, timeout=10, force=True)


def _settings(path: Path) -> Settings:
    return Settings(home=path / "ctcd", server_port_range=PORTS)


def _outcomes(backend: LocalDeployer, service_id: str) -> list[str]:
    return [d.outcome for d in backend.history(service_id)]


def _status_until(backend: LocalDeployer, service_id: str, wanted: ServiceStatus,
                  timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while backend.status(service_id) is not wanted:
        assert time.monotonic() < deadline, f"{service_id} never read {wanted.value}"
        time.sleep(0.5)


def test_deferred_start_is_pending_until_a_status_call_observes_it_ready(
    deployer: LocalDeployer, churn_model: Any
) -> None:
    handle = deployer.deploy_model(config(churn_model), timeout=240, wait=False)
    [pending] = deployer.history(handle.service_id)  # read before any status call
    assert pending.outcome == "pending" and pending.seconds_to_serving is None
    _status_until(deployer, handle.service_id, ServiceStatus.RUNNING, timeout=240)
    [done] = deployer.history(handle.service_id)
    assert done.outcome == "succeeded" and done.started_at == pending.started_at
    assert done.seconds_to_serving is not None and done.seconds_to_serving > 0
    assert done.finished_at > done.started_at
    deployer.status(handle.service_id)  # settled once: later calls change nothing
    assert deployer.history(handle.service_id) == [done]


def test_deferred_start_whose_process_ends_or_is_stopped_is_recorded_failed(
    tmp_path: Path
) -> None:
    dying = [sys.executable, "-c", "import time; time.sleep(2); raise SystemExit(3)"]
    backend = LocalDeployer(_settings(tmp_path), server_command=dying)
    cfg = DeploymentConfig(model_name="dies", model_uri="models:/dies/1", model_version="1")
    handle = backend.deploy_model(cfg, timeout=60, wait=False)
    assert _outcomes(backend, handle.service_id) == ["pending"]
    deadline = time.monotonic() + 120
    while _outcomes(backend, handle.service_id) == ["pending"]:  # until the process is gone
        assert time.monotonic() < deadline
        backend.status(handle.service_id)
        time.sleep(0.5)
    [failed] = backend.history(handle.service_id)
    assert failed.outcome == "failed" and "ended" in (failed.message or "")
    assert failed.seconds_to_serving is None

    never_ready = LocalDeployer(_settings(tmp_path),
                                server_command=[sys.executable, "-c", "import time; "
                                                "time.sleep(600)"])
    other = never_ready.deploy_model(
        DeploymentConfig(model_name="slow", model_uri="models:/slow/1", model_version="1"),
        timeout=60, wait=False)
    assert _outcomes(never_ready, other.service_id) == ["pending"]
    never_ready.stop_model_server(other.service_id, timeout=10, force=True)
    assert _outcomes(never_ready, other.service_id) == ["failed"]
    assert "stopped before" in (never_ready.history(other.service_id)[0].message or "")


def test_a_registry_made_before_pending_existed_is_migrated_keeping_its_history(
    tmp_path: Path
) -> None:
    from ctcd.deployers.local.store import SCHEMA, ServerStore

    path = tmp_path / "registry.db"
    old = SCHEMA.replace(
        """CHECK (outcome IN ('succeeded', 'unchanged', 'failed', 'pending', 'held'))""",
        """CHECK (outcome IN ('succeeded', 'unchanged', 'failed'))""")
    assert old != SCHEMA
    cfg = DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="1")
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute("INSERT INTO deployments (server_id, config, strategy, outcome, started_at,"
                   " finished_at) VALUES ('s1', ?, 'start', 'succeeded', 't0', 't1')",
                   (json.dumps(cfg.to_dict()),))
    store = ServerStore(path)
    store.record_deployment("s1", cfg, strategy="start", outcome="pending",
                            started_at="2026-11-22T00:00:00.000+00:00")
    assert [d.outcome for d in store.history("s1")] == ["pending", "succeeded"]
    assert store.settle_pending("s1", "succeeded") == 1
    assert [d.outcome for d in store.history("s1")] == ["succeeded", "succeeded"]
    ServerStore(path)  # opening it again changes nothing
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                         " AND tbl_name = 'deployments'")] == [
            "deployments_by_server"]


def test_a_registry_made_before_held_existed_is_migrated_keeping_its_notes(
    tmp_path: Path
) -> None:
    """A registry with ``pending`` and the notes column, but no ``held`` outcome: rebuilt
    with every row and column, then a held shadow is recorded."""
    from ctcd.deployers.local.store import SCHEMA, ServerStore

    path = tmp_path / "registry.db"
    old = SCHEMA.replace("'pending', 'held'))", "'pending'))")
    assert old != SCHEMA
    cfg = DeploymentConfig(model_name="m", model_uri="models:/m/1", model_version="1")
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute("ALTER TABLE deployments ADD COLUMN notes TEXT")
        db.execute("INSERT INTO deployments (server_id, config, strategy, outcome, started_at,"
                   " finished_at, notes) VALUES ('s1', ?, 'canary', 'succeeded', 't0', 't1', ?)",
                   (json.dumps(cfg.to_dict()), json.dumps(["canary step 20% passed"])))
    store = ServerStore(path)
    store.record_deployment("s1", cfg, strategy="shadow", outcome="held",
                            started_at="2026-12-06T00:00:00.000+00:00",
                            notes=["inconclusive: the shadow keeps running"])
    assert [(d.outcome, d.notes) for d in store.history("s1")] == [
        ("held", ("inconclusive: the shadow keeps running",)),
        ("succeeded", ("canary step 20% passed",))]
    ServerStore(path)  # opening it again changes nothing
    with sqlite3.connect(path) as db:
        assert "'held'" in db.execute("SELECT sql FROM sqlite_master WHERE name ="
                                      " 'deployments'").fetchone()[0]
