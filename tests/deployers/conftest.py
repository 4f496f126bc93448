"""Fixtures for deployer tests: a deployer on a private home, bad models, client load.

Every model server here is a real ``python -m ctcd.serving`` process on loopback, loading
real models from the session's real MLflow server.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ctcd.deployers.local import LocalDeployer
from ctcd.settings import Settings

MODELS = Path(__file__).parent / "models"


# Ports of their own, apart from the default range other suites' servers use.
PORTS = (9100, 9499)


def make_deployer(home: Path) -> LocalDeployer:
    return LocalDeployer(Settings(home=home, server_port_range=PORTS))


def cleanup(deployer: LocalDeployer) -> None:
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=10, force=True)


@pytest.fixture
def deployer(tmp_path: Path, mlflow_server: str) -> Iterator[LocalDeployer]:
    """A local deployer with its own registry; deletes its servers afterwards."""
    backend = make_deployer(tmp_path / "ctcd")
    yield backend
    cleanup(backend)


@pytest.fixture(scope="module")
def module_deployer(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: str
) -> Iterator[LocalDeployer]:
    """One deployer (and so one set of servers) shared by a module's tests, in order."""
    backend = make_deployer(tmp_path_factory.mktemp("ctcd"))
    yield backend
    cleanup(backend)


@dataclass(frozen=True)
class PyfuncModel:
    name: str
    version: str
    uri: str


def _log_pyfunc(code: Path, name: str, example: Any) -> PyfuncModel:
    """Log a models-from-code pyfunc with an explicit signature (a model that cannot predict
    could not have one inferred), so the server validates input and warms it up."""
    import mlflow
    from mlflow.models import infer_signature

    mlflow.set_experiment("ctcd-tests")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code), input_example=example,
            signature=infer_signature(example, [0] * len(example)),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    return PyfuncModel(name=name, version=version, uri=f"models:/{name}/{version}")


@pytest.fixture(scope="session")
def flaky_model_uri(churn_model: Any) -> str:
    """A version that loads and warms, then fails every request under traffic."""
    return _log_pyfunc(MODELS / "flaky_model.py", "flaky-test", churn_model.example.head(3)).uri


@pytest.fixture(scope="session")
def crashing_model_uri(churn_model: Any) -> str:
    """A version whose warm-up prediction raises, so the server refuses to load it."""
    return _log_pyfunc(MODELS / "crashing_model.py", "crashing-test",
                       churn_model.example.head(3)).uri


@pytest.fixture(scope="session")
def shadow_model_uri(churn_model: Any) -> Callable[[str], str]:
    """``shadow_model_uri(kind)``: a version that loads and warms, then, under traffic,
    disagrees on every row (contrary), raises (flaky), takes 50 ms (slow) or hangs."""
    logged: dict[str, str] = {}

    def uri(kind: str) -> str:
        if kind not in logged:
            logged[kind] = _log_pyfunc(MODELS / f"{kind}_model.py", f"{kind}-test",
                                       churn_model.example.head(3)).uri
        return logged[kind]

    return uri


@dataclass
class Load:
    """Continuous client traffic against an endpoint, counted per outcome and version."""

    endpoint: str
    rows: list[dict[str, Any]]
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)
    per_client: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = 2) -> Load:
        for i in range(clients):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, i: int) -> None:
        body = {"dataframe_records": [self.rows[i % len(self.rows)]]}
        with httpx.Client(base_url=self.endpoint, timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/invocations", json=body)
                except httpx.HTTPError as err:
                    self._count(i, False, f"{type(err).__name__}: {err}", None)
                    continue
                ok = response.status_code == 200
                self._count(i, ok, f"{response.status_code} {response.text[:200]}",
                            response.headers.get("x-model-version"))

    def _count(self, client: int, ok: bool, detail: str, version: str | None) -> None:
        self.per_client[client] += 1
        self.sent += 1
        if not ok:
            self.failed += 1
            self.failures.append(detail)
        if ok and version:
            self.versions[version] += 1
            self.first_seen.setdefault(version, time.monotonic())

    def wait_for(self, predicate: Callable[[Load], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            assert time.monotonic() < deadline, f"load never reached the condition: {self}"
            time.sleep(0.05)

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every client has sent a whole request after this call: the requests
        in flight when it was called (e.g. routed to a version being rolled back) are then
        counted."""
        marks = dict(self.per_client)
        self.wait_for(lambda t: all(t.per_client[i] >= marks.get(i, 0) + 2
                                    for i in range(len(t._threads))), timeout)

    def snapshot(self) -> tuple[int, int]:
        return self.sent, self.failed


@pytest.fixture
def load() -> Iterator[Callable[[str, Any], Load]]:
    """``load(endpoint, frame)`` starts client traffic; it is stopped after the test."""
    started: list[Load] = []

    def start(endpoint: str, frame: Any, clients: int = 2) -> Load:
        generator = Load(endpoint, frame.to_dict(orient="records")).start(clients)
        started.append(generator)
        return generator

    yield start
    for generator in started:
        generator.stop()
