"""Strategies across pods (`pods.PodsAdmin`) end to end, against a real API server and
controller manager (:mod:`.control_plane`), with the test kubelet running each pod's
container command for real: every pod is a real ``python -m ctcd.serving`` process on its
own loopback address, started from the Deployment's env (ConfigMap and Secret read from the
API server), made Ready by its real readiness probe; the NodePort Service forwards client
traffic to the ready pods (the kubelet's stand-in for kube-proxy).

So the same strategy code, analysis and rollback as the local backend run across two pods
of a Deployment rolled by the real controller: the deployer loads, weighs and unloads
versions on every pod through their admin APIs, client load goes through the Service, and
pods started later come up with the version recorded in the ConfigMap. Each test starts
from whatever the module's server serves (the first deploys it if needed), so any one of
them runs alone.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from tests.deployers.kubernetes.clusters import Namespace, needs_test_kubelet

from ctcd.deployers import DeploymentConfig, SupportsRollback
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.cluster import instance
from ctcd.deployers.kubernetes.pods import PodsAdmin
from ctcd.deployers.kubernetes.resources import PORT, secret_name
from ctcd.errors import RolledBack, ShadowAwaitingDecision
from ctcd.services import ServiceHandle

pytestmark = [pytest.mark.e2e, needs_test_kubelet]
MODEL = "churn-k8s"
NAME = "ctcd-churn-k8s"


@pytest.fixture
def deployer(pods_namespace: Namespace, make_deployer: Any) -> KubernetesDeployer:
    backend: KubernetesDeployer = make_deployer(pods_namespace, replicas=2)
    return backend


@pytest.fixture(scope="module")
def first(model_factory: Any) -> Any:
    return model_factory(name=MODEL, kind="logistic_regression")


@pytest.fixture
def serving(deployer: KubernetesDeployer, first: Any) -> ServiceHandle:
    """The module's server, running (deployed with ``first`` if there is none)."""
    found = deployer.find_model_server(model_name=MODEL)
    if not found:
        return deployer.deploy_model(_config(first), timeout=240)
    if not found[0].is_running():
        return deployer.start_model_server(found[0].service_id, timeout=240)
    return found[0]


def _serving_on_every_pod(deployer: KubernetesDeployer) -> list[dict[str, float]]:
    pods = deployer.cluster.ready_pods(instance(NAME), PORT)
    token = deployer.cluster.secret(secret_name(NAME))["token"]
    out = []
    for pod in pods:
        with PodsAdmin([pod], token=token) as admin:
            out.append(admin.serving())
    return out


def _config(model: Any) -> DeploymentConfig:
    return DeploymentConfig(model_name=MODEL, model_uri=model.uri, model_version=model.version,
                            dag_id="continuous_training", task_id="deploy")


def test_first_deploy_starts_real_pods_behind_the_service(
    deployer: KubernetesDeployer, pods_namespace: Namespace, first: Any, churn_model: Any
) -> None:
    for found in deployer.find_model_server(model_name=MODEL):
        deployer.delete_model_server(found.service_id, timeout=60)
    handle = deployer.deploy_model(_config(first), timeout=240)
    assert handle.is_running()
    rows = churn_model.example.head(3)
    assert len(handle.predict(rows)) == 3
    pods = pods_namespace.pods()
    assert len(pods) == 2 and len({p["status"]["podIP"] for p in pods}) == 2
    assert _serving_on_every_pod(deployer) == [{first.version: 1.0}] * 2


@pytest.mark.parametrize(
    "strategy",
    [{"name": "canary", "steps": [0.2, 0.5], "interval_seconds": 1.5, "max_error_rate": 0.0},
     "replace", {"name": "blue_green", "verify_seconds": 1.5},
     # the same fit as the serving version: every pod's shadow agrees, the merged
     # comparison passes, every pod is promoted
     {"name": "shadow", "min_requests": 20, "max_seconds": 60, "poll_seconds": 0.3}],
    ids=["canary", "replace", "blue_green", "shadow"],
)
def test_strategy_moves_every_pod_under_load_without_a_failed_request(
    strategy: Any, deployer: KubernetesDeployer, pods_namespace: Namespace,
    serving: ServiceHandle, model_factory: Any, churn_model: Any, load: Any,
) -> None:
    new = model_factory(name=MODEL, kind="logistic_regression")
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20, timeout=120)
    pods_before = {p["metadata"]["name"] for p in pods_namespace.pods()}

    handle = deployer.deploy_model(_config(new), strategy=strategy, timeout=180)
    traffic.wait_for(lambda t: t.versions[new.version] >= 30, timeout=120)
    traffic.stop()

    assert traffic.failed == 0, traffic.failures[:5]
    assert handle.model_version == new.version and handle.service_id == serving.service_id
    assert _serving_on_every_pod(deployer) == [{new.version: 1.0}] * 2
    assert {p["metadata"]["name"] for p in pods_namespace.pods()} == pods_before  # no restart
    configmap = pods_namespace.get("configmaps", NAME)
    assert configmap is not None and configmap["data"]["model_version"] == new.version
    history = deployer.describe_model_server(handle.service_id).history
    assert history[0].outcome == "succeeded" and history[0].config.model_version == new.version
    if isinstance(strategy, dict) and strategy["name"] == "shadow":
        [summary] = [n for n in history[0].notes if n.startswith("shadow of version")]
        assert "agreement 100.00%" in summary, history[0].notes


def test_a_held_shadow_promoted_by_hand_keeps_its_deploys_lineage(
    deployer: KubernetesDeployer, serving: ServiceHandle, model_factory: Any,
) -> None:
    # too few requests to judge (no traffic) and hold: the shadow waits for a person
    live = deployer.describe_model_server(serving.service_id).handle.model_version
    new = model_factory(name=MODEL, kind="logistic_regression")
    config = DeploymentConfig(model_name=MODEL, model_uri=new.uri, model_version=new.version,
                              mlflow_run_id=new.run_id, dag_id="continuous_training",
                              run_id="scheduled__held", task_id="deploy")
    with pytest.raises(ShadowAwaitingDecision):
        deployer.deploy_model(config, strategy={"name": "shadow", "min_requests": 50,
                                                "max_seconds": 2, "poll_seconds": 0.3,
                                                "inconclusive": "hold"}, timeout=180)
    held = deployer.describe_model_server(serving.service_id)
    assert held.history[0].outcome == "held" and held.shadow is not None
    assert _serving_on_every_pod(deployer) == [{live: 1.0}] * 2

    promoted = deployer.promote_model_server(serving.service_id, timeout=120)
    assert promoted.model_version == new.version
    assert (promoted.run_id, promoted.mlflow_run_id) == ("scheduled__held", new.run_id)
    assert _serving_on_every_pod(deployer) == [{new.version: 1.0}] * 2


def test_failing_canary_rolls_back_on_every_pod(
    deployer: KubernetesDeployer, pods_namespace: Namespace, serving: ServiceHandle,
    churn_model: Any, load: Any, flaky_model_uri: str,
) -> None:
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20, timeout=120)
    bad = DeploymentConfig(model_name=MODEL, model_uri=flaky_model_uri, model_version="flaky")
    with pytest.raises(RolledBack, match="canary failed at 25% traffic: error rate"):
        deployer.deploy_model(bad, strategy={"name": "canary", "steps": [0.25],
                                             "interval_seconds": 2, "max_error_rate": 0.05},
                              timeout=180)
    traffic.settle(timeout=120)
    sent, failed = traffic.snapshot()
    traffic.wait_for(lambda t: t.sent >= sent + 40, timeout=120)
    traffic.stop()
    assert failed > 0, "the flaky version answered no request before the rollback"
    assert traffic.failed == failed, traffic.failures[failed:failed + 5]  # none after it
    assert _serving_on_every_pod(deployer) == [{serving.model_version: 1.0}] * 2
    deployment = pods_namespace.get("deployments", NAME)
    assert deployment is not None
    notes = deployment["metadata"]["annotations"]
    assert json.loads(notes["ctcd.io/config"])["model_version"] == serving.model_version
    assert "canary failed" in notes["ctcd.io/last-error"]
    configmap = pods_namespace.get("configmaps", NAME)
    assert configmap is not None and configmap["data"]["model_version"] == serving.model_version


def test_pods_started_later_serve_the_deployed_version_and_log(
    deployer: KubernetesDeployer, pods_namespace: Namespace, serving: ServiceHandle
) -> None:
    deployer.stop_model_server(serving.service_id, timeout=60)
    assert not serving.is_running()
    assert pods_namespace.pods() == []

    started = deployer.start_model_server(serving.service_id, timeout=240)
    assert started.is_running() and started.model_version == serving.model_version
    assert _serving_on_every_pod(deployer) == [{serving.model_version: 1.0}] * 2
    answer = httpx.get(f"{started.endpoint}/v2/models/{MODEL}", timeout=10).json()
    assert answer["versions"] == [serving.model_version] or serving.model_version in str(answer)
    lines = list(deployer.get_logs(serving.service_id, tail=50))
    assert lines and all(line.startswith("[ctcd-churn-k8s-") for line in lines)
    assert any("listening" in line for line in lines)


def test_rollback_redeploys_the_previous_version(
    deployer: KubernetesDeployer, serving: ServiceHandle, load: Any, churn_model: Any,
    model_factory: Any,
) -> None:
    history = deployer.describe_model_server(serving.service_id).history
    if not any(e.outcome == "succeeded" and e.config.model_version != serving.model_version
               for e in history):  # run alone: make a history to roll back in
        serving = deployer.deploy_model(
            _config(model_factory(name=MODEL, kind="logistic_regression")), timeout=180)
        history = deployer.describe_model_server(serving.service_id).history
    earlier = next(e.config.model_version for e in history
                   if e.outcome == "succeeded" and e.config.model_version != serving.model_version)
    assert isinstance(deployer, SupportsRollback)
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 10, timeout=120)
    handle: ServiceHandle = deployer.rollback_model_server(serving.service_id, timeout=180)
    traffic.wait_for(lambda t: t.versions[earlier] >= 10, timeout=120)
    traffic.stop()
    assert traffic.failed == 0
    assert handle.model_version == earlier
    assert _serving_on_every_pod(deployer) == [{earlier: 1.0}] * 2
    deployer.delete_model_server(serving.service_id, timeout=60)
    assert deployer.find_model_server() == []

