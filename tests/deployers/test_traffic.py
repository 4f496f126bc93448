"""A rollout ended by hand through the deployer contract (``rollback_model_server``,
``promote_model_server``), against one real model server under client load: the canary's
deploy sees the change at once and ends with it, no request fails, and the history says
what happened with the strategy's notes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ctcd.deployers import DeploymentConfig, SupportsPromotion, SupportsRollback
from ctcd.deployers.local import LocalDeployer
from ctcd.deployers.traffic import NoRolloutInProgress
from ctcd.errors import RolledBack
from ctcd.services import ServiceHandle

pytestmark = pytest.mark.e2e
MODEL = "churn-by-hand"
CANARY = {"name": "canary", "steps": [0.2, 0.5], "interval_seconds": 120,
          "max_error_rate": 0.0}


@pytest.fixture(scope="module")
def serving(module_deployer: LocalDeployer, model_factory: Any) -> ServiceHandle:
    first = model_factory(name=MODEL, kind="logistic_regression")
    return module_deployer.deploy_model(
        DeploymentConfig(model_name=MODEL, model_uri=first.uri, model_version=first.version),
        timeout=180)


class Deploying(threading.Thread):
    """A canary deploy of a new version running in the background (as a deploy task would)."""

    def __init__(self, deployer: LocalDeployer, config: DeploymentConfig) -> None:
        super().__init__(daemon=True)
        self.deployer, self.config = deployer, config
        self.result: ServiceHandle | Exception | None = None

    def run(self) -> None:
        try:
            self.result = self.deployer.deploy_model(self.config, CANARY, timeout=600)
        except Exception as err:
            self.result = err


def _canary_at_20(deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any
                  ) -> tuple[Deploying, str]:
    new = model_factory(name=MODEL, kind="logistic_regression")
    deploying = Deploying(deployer, DeploymentConfig(
        model_name=MODEL, model_uri=new.uri, model_version=new.version,
        dag_id="churn_training", run_id="manual__canary", task_id="deploy"))
    deploying.start()
    deadline = time.monotonic() + 120
    while _weights(deployer, serving).get(new.version) != pytest.approx(0.2):
        assert time.monotonic() < deadline, "the canary never reached 20%"
        time.sleep(0.2)
    return deploying, new.version


def _weights(deployer: LocalDeployer, handle: ServiceHandle) -> dict[str, float]:
    return {v.version: v.weight for v in deployer.describe_model_server(handle.service_id).versions}


def test_the_backend_has_both_capabilities(module_deployer: LocalDeployer) -> None:
    assert isinstance(module_deployer, SupportsRollback)
    assert isinstance(module_deployer, SupportsPromotion)


def test_promote_with_no_rollout_in_progress_is_a_409(
    module_deployer: LocalDeployer, serving: ServiceHandle
) -> None:
    with pytest.raises(NoRolloutInProgress, match="no rollout in progress") as err:
        module_deployer.promote_model_server(serving.service_id)
    assert err.value.status_code == 409


def test_a_canary_rolled_back_by_hand_ends_its_deploy_and_loses_no_request(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Callable[..., Any],
) -> None:
    before = module_deployer.describe_model_server(serving.service_id).handle.model_version
    traffic = load(serving.endpoint, churn_model.example)
    deploying, version = _canary_at_20(module_deployer, serving, model_factory)
    started = time.monotonic()
    handle = module_deployer.rollback_model_server(serving.service_id, timeout=60)
    deploying.join(timeout=30)
    took = time.monotonic() - started
    traffic.settle()
    traffic.stop()
    assert handle.model_version == before
    assert _weights(module_deployer, serving) == {before: 1.0}
    assert isinstance(deploying.result, RolledBack), deploying.result
    assert "rolled back by hand" in deploying.result.message
    assert took < 15, f"the deploy noticed the rollback only after {took:.1f}s"
    assert traffic.failed == 0, traffic.failures[:3]
    [latest] = module_deployer.history(serving.service_id, limit=1)
    assert (latest.config.model_version, latest.outcome) == (version, "failed")
    assert latest.config.run_id == "manual__canary"
    assert "rolled back by hand" in (latest.message or "")
    assert any(n.startswith("traffic ") for n in latest.notes), latest.notes


def test_a_canary_promoted_by_hand_serves_all_traffic_and_its_deploy_succeeds(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
    churn_model: Any, load: Callable[..., Any],
) -> None:
    traffic = load(serving.endpoint, churn_model.example)
    deploying, version = _canary_at_20(module_deployer, serving, model_factory)
    handle = module_deployer.promote_model_server(serving.service_id, timeout=60)
    deploying.join(timeout=30)
    traffic.settle()
    traffic.stop()
    assert isinstance(deploying.result, ServiceHandle), deploying.result
    assert handle.model_version == version == deploying.result.model_version
    assert handle.run_id == "manual__canary"  # the deploy that ended with it recorded it
    assert _weights(module_deployer, serving) == {version: 1.0}
    assert traffic.failed == 0, traffic.failures[:3]
    [latest] = module_deployer.history(serving.service_id, limit=1)
    assert (latest.config.model_version, latest.outcome) == (version, "succeeded")
    assert any("promoted by hand" in n for n in latest.notes), latest.notes


def test_a_version_left_loaded_with_no_deploy_running_is_dropped_and_recorded(
    module_deployer: LocalDeployer, serving: ServiceHandle, model_factory: Any,
) -> None:
    current = module_deployer.describe_model_server(serving.service_id).handle.model_version
    stray = model_factory(name=MODEL, kind="logistic_regression")
    with module_deployer.admin(serving.service_id) as admin:  # e.g. a deploy that crashed
        admin.load(stray.uri, stray.version, timeout=120)
        admin.set_traffic({current: 0.7, stray.version: 0.3})
    handle = module_deployer.rollback_model_server(serving.service_id, timeout=60)
    assert handle.model_version == current
    assert _weights(module_deployer, serving) == {current: 1.0}
    [latest] = module_deployer.history(serving.service_id, limit=1)
    assert (latest.strategy, latest.outcome) == ("rollback", "succeeded")
    assert f"version {stray.version} dropped by hand" in (latest.message or "")
