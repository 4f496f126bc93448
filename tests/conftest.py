"""Shared fixtures: real MLflow tracking server, registered models, isolated homes.

Airflow reads its configuration when first imported, so the test session's AIRFLOW_HOME
and settings are put in the environment here, before any test module imports Airflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from tests import stopping  # noqa: E402
from tests.api_server import API_USERS, ApiServer  # noqa: E402
from tests.flavored_models import FlavoredFactory, Registry  # noqa: E402

from ctcd import reaper  # noqa: E402
from ctcd.stack.config import airflow_env  # noqa: E402
from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http  # noqa: E402

# SIGTERM stops the session and its fixtures' teardown stops their servers (tests/stopping.py);
# if the session is killed, its reaper stops every server registered with it.
stopping.install()
_REAPER = reaper.start()
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="ctcd-tests-"))
_AIRFLOW_HOME = _SESSION_DIR / "airflow"
os.environ.update(airflow_env(_AIRFLOW_HOME, api_port=free_port()))
os.environ.setdefault("CTCD_HOME", str(_SESSION_DIR / "ctcd"))
os.environ["GIT_PYTHON_REFRESH"] = "quiet"
os.environ.setdefault("CTCD_TRAINING_THREADS", "1")
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def pytest_sessionstart(session: pytest.Session) -> None:
    stopping.session_started(session)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what the session started and did not stop itself (the reaper's pass)."""
    _REAPER.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's directory (its Airflow home, MLflow store, CTCD_HOME) after a
    clean run; keep it for a look when a test failed (the summary says where)."""
    if session.testsfailed or exitstatus not in (pytest.ExitCode.OK,
                                                 pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SESSION_DIR.exists():
        terminalreporter.write_line(f"kept this session's files (Airflow home, MLflow store, "
                                    f"CTCD_HOME) for the failures: {_SESSION_DIR}")


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (the repo's dags/, plugins/)."""
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            env=os.environ.copy(),
        )
        marker.touch()
    return _AIRFLOW_HOME


@pytest.fixture
def ctcd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ctcd-home"
    home.mkdir()
    monkeypatch.setenv("CTCD_HOME", str(home))
    return home


@dataclass
class _SessionServer:
    """A server the whole session uses; ``tree`` is its process and the processes it
    started (``mlflow server`` runs uvicorn in a child process)."""

    proc: subprocess.Popen[bytes]
    argv: list[str]
    log: Path
    health: str
    tree: list[psutil.Process] = field(default_factory=list)

    def start(self) -> None:
        self.proc = spawn(self.argv, log_path=self.log, env=_MLFLOW_SERVER_ENV)
        self.wait()

    def wait(self) -> None:
        wait_http(self.health, timeout=120, process=self.proc, log_path=self.log)
        root = psutil.Process(self.proc.pid)
        self.tree = [root, *root.children(recursive=True)]

    def dead(self) -> list[psutil.Process]:
        return [p for p in self.tree
                if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE]


# The session's long-lived servers, by name. Checked after every test.
_SESSION_SERVERS: dict[str, _SessionServer] = {}
_MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """A real `mlflow server` on loopback: SQLite backend store, proxied local artifacts."""
    root = _SESSION_DIR / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "server.log"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    uri = f"http://127.0.0.1:{port}"
    server = _SessionServer(spawn(argv, log_path=log, env=_MLFLOW_SERVER_ENV), argv, log,
                            f"{uri}/health")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        server.wait()
        _SESSION_SERVERS["mlflow"] = server
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
        _SESSION_SERVERS.pop("mlflow", None)
        stop_process_tree(server.proc.pid)


@pytest.fixture(autouse=True)
def _session_servers_outlive_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A session server (the MLflow tracking server) that dies during a test fails that
    test, with its exit code and log, and is started again on the same port and store, so
    the test that killed it is named and the tests after it do not fail one by one.

    Not once the session was told to stop: a stop that took the server down too (a time
    limit killing every process of the run) needs no new server, only the teardown, and
    the session ends as interrupted, not failed."""
    yield
    if stopping.requested():
        return
    for name, server in _SESSION_SERVERS.items():
        dead = server.dead()
        if not dead:
            continue
        tail = server.log.read_text(errors="replace").splitlines()[-30:]
        for proc in server.tree:  # psutil checks the pid was not reused before signalling
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        code = server.proc.wait(timeout=30)
        server.start()
        pytest.fail(f"the session's {name} server died during {request.node.nodeid} "
                    f"(gone: pids {[p.pid for p in dead]}; its first process exited with "
                    f"{code}); started again. "
                    f"Its log ended:\n" + "\n".join(tail), pytrace=False)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    uri: str
    run_id: str
    example: object  # pandas.DataFrame of feature rows (no label)


ModelFactory = Callable[..., RegisteredModel]


@pytest.fixture(scope="session")
def model_factory(mlflow_server: str) -> ModelFactory:
    """Train a small churn pipeline and register it; every call makes a new version."""
    import mlflow

    from ctcd.data.churn import FEATURES, LABEL, generate_snapshot
    from ctcd.training.model import build_pipeline, log_model

    frame = generate_snapshot(date(2026, 1, 1), rows=4_000)
    features = frame[list(FEATURES)]
    defaults = {
        "logistic_regression": {"max_iter": 300},
        "random_forest": {"n_estimators": 20, "max_depth": 6},
        "hist_gradient_boosting": {"max_iter": 50},
    }

    def make(name: str = "churn-test", kind: str = "hist_gradient_boosting") -> RegisteredModel:
        pipeline = build_pipeline(kind, defaults[kind]).fit(features, frame[LABEL])
        mlflow.set_tracking_uri(mlflow_server)
        mlflow.set_experiment("ctcd-tests")
        with mlflow.start_run() as run:
            info = log_model(pipeline, features.head(5), registered_model_name=name)
        version = str(info.registered_model_version)
        return RegisteredModel(
            name=name,
            version=version,
            uri=f"models:/{name}/{version}",
            run_id=run.info.run_id,
            example=features.head(20).reset_index(drop=True),
        )

    return make


@pytest.fixture(scope="session")
def churn_model(model_factory: ModelFactory) -> RegisteredModel:
    return model_factory(name="churn-fixture")


@pytest.fixture(scope="session")
def flavored_model(mlflow_server: str) -> FlavoredFactory:
    """``flavored_model(kind)``: an XGBoost, LightGBM or scikit-learn model of one task,
    logged with its own MLflow flavor and registered, once per session
    (tests/flavored_models.py)."""
    return Registry(mlflow_server)


class ModelFiles:
    """A models folder of the test's own (``CTCD_MODELS_DIR``): ``write(key, **fields)``
    writes ``<key>.yaml`` and returns the loaded definition. Fields default to the churn
    example with a fast estimator, named after the test so runs never share a registry
    entry."""

    def __init__(self, folder: Path, default_name: str) -> None:
        self.folder = folder
        self.default_name = default_name

    def write(self, key: str = "churn", **fields: Any) -> Any:
        import yaml

        from ctcd.models import load_model

        document = {
            "name": fields.pop("name", f"{self.default_name}-{key}"[:90]),
            "dataset": fields.pop("dataset", "churn"),
            "trainer": fields.pop("trainer", {"estimator": "logistic_regression",
                                              "hyperparameters": {"max_iter": 300}}),
            **fields,
        }
        (self.folder / f"{key}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        return load_model(key)

    def example(self, key: str, *, name: str | None = None, **changes: Any) -> Any:
        """One of the shipped example model files (include/models/<key>.yaml), renamed for
        the test, with ``changes`` to its top-level sections."""
        import yaml

        from ctcd.settings import PROJECT_ROOT

        shipped = yaml.safe_load((PROJECT_ROOT / "include" / "models" / f"{key}.yaml")
                                 .read_text())
        shipped["name"] = name or f"{self.default_name}-{key}"[:90]
        for section, value in changes.items():
            if isinstance(value, dict) and isinstance(shipped.get(section), dict):
                shipped[section] = {**shipped[section], **value}
            else:
                shipped[section] = value
        return self.write(key, **shipped)


@pytest.fixture
def model_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                request: pytest.FixtureRequest) -> ModelFiles:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("CTCD_MODELS_DIR", str(folder))
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in request.node.name)
    return ModelFiles(folder, f"t-{name[:60]}")


@pytest.fixture(scope="session")
def api_server(airflow_home: Path, mlflow_server: str) -> Iterator[ApiServer]:
    """One API server for the session (about 20 s to start): the deployments view's tests
    and the approval tests, whose ``airflow dags test`` runs share its metadata DB."""
    import json

    passwords = _SESSION_DIR / "api-passwords.json"
    passwords.write_text(json.dumps(API_USERS))
    port = free_port()
    home = _SESSION_DIR / "api-ctcd"
    env = {
        **os.environ, "CTCD_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
    }
    log = _SESSION_DIR / "api-server.log"
    proc = spawn([sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
                 log_path=log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=180,
                  process=proc, log_path=log)
        yield ApiServer(f"http://127.0.0.1:{port}", home)
    finally:
        stop_process_tree(proc.pid)
