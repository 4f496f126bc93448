"""`ctcd models shadow`: a registered version as a shadow of the serving one, from the
command line, against a real model server on loopback with client traffic running."""

from __future__ import annotations

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
PORTS = (9780, 9789)
MODEL = "churn-cli-shadow"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, model_factory: Any
) -> Iterator[tuple[LocalDeployer, ServiceHandle, Path]]:
    home = tmp_path_factory.mktemp("cli-shadow")
    backend = LocalDeployer(Settings(home=home, server_port_range=PORTS))
    first = model_factory(name=MODEL, kind="logistic_regression")
    handle = backend.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=first.uri, model_version=first.version),
        timeout=180,
    )
    yield backend, handle, home
    for h in backend.find_model_server():
        backend.delete_model_server(h.service_id, timeout=10, force=True)


@pytest.fixture
def ctcd(live: tuple[LocalDeployer, ServiceHandle, Path], monkeypatch: pytest.MonkeyPatch
         ) -> Any:
    return invoker(live[2], PORTS, monkeypatch)


def _serving(backend: LocalDeployer, handle: ServiceHandle) -> dict[str, float]:
    with backend.admin(handle.service_id) as admin:
        return dict(admin.serving())


def test_bad_options_are_refused_before_anything_is_deployed(
    ctcd: Any, live: tuple[LocalDeployer, ServiceHandle, Path]
) -> None:
    backend, handle, _ = live
    before = _serving(backend, handle)
    assert "write name=value" in ctcd("models", "shadow", handle.server_name, "1",
                                      "--option", "min_agreement", code=1)
    assert "must be a number" in ctcd("models", "shadow", handle.server_name, "1",
                                      "--option", "min_agreement=high", code=1)
    assert _serving(backend, handle) == before


def test_too_few_mirrored_requests_is_inconclusive_and_the_champion_stays(
    ctcd: Any, live: tuple[LocalDeployer, ServiceHandle, Path], model_factory: Any
) -> None:
    backend, handle, _ = live
    before = _serving(backend, handle)
    candidate = model_factory(name=MODEL, kind="logistic_regression")
    # no client traffic: nothing is mirrored within max_seconds
    output = ctcd("models", "shadow", handle.server_name, candidate.version,
                  "--min-requests", "50", "--max-seconds", "3", code=1)
    assert "inconclusive" in output, output
    assert _serving(backend, handle) == before


def test_an_equal_shadow_is_promoted_while_clients_are_answered(
    ctcd: Any, live: tuple[LocalDeployer, ServiceHandle, Path], model_factory: Any,
    churn_model: Any, load: Any,
) -> None:
    backend, handle, _ = live
    candidate = model_factory(name=MODEL, kind="logistic_regression")  # same fit, same answers
    traffic = load(handle.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20)
    output = ctcd("models", "shadow", handle.server_name, candidate.version,
                  "--mirror-percent", "100", "--min-requests", "30", "--max-seconds", "60",
                  "--option", "poll_seconds=0.2")
    traffic.wait_for(lambda t: t.versions[candidate.version] >= 10)
    traffic.stop()
    assert f"shadow of version {candidate.version} promoted" in output, output
    assert traffic.failed == 0, traffic.failures[:5]
    assert _serving(backend, handle) == {candidate.version: 1.0}
    [last] = backend.history(handle.service_id, limit=1)
    assert (last.strategy, last.outcome) == ("shadow", "succeeded")
