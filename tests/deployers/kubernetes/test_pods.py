"""Strategies across pods (`pods.PodsAdmin`) end to end, against a FAKE Kubernetes API server
whose kubelet runs each pod's container command for real: every pod is a real
``python -m ctcd.serving`` process on its own loopback address, started from the
Deployment's env (ConfigMap and Secret resolved), made Ready by its real readiness probe,
and the NodePort Service forwards client traffic to the ready pods (as kube-proxy would).

So the same strategy code, analysis and rollback as the local backend run across two pods:
the deployer loads, weighs and unloads versions on every pod through their admin APIs,
client load goes through the Service, and pods started later come up with the version
recorded in the ConfigMap. No cluster runs here: on a real one run these tests with
``CTCD_K8S_TEST_CLUSTER=1`` and a model-server image (see docs/how-to/kubernetes.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.deployers.kubernetes.clusters import fake_only
from tests.deployers.kubernetes.fake_api import FakeCluster

from ctcd.deployers import DeploymentConfig, SupportsRollback
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.cluster import instance
from ctcd.deployers.kubernetes.pods import PodsAdmin
from ctcd.deployers.kubernetes.resources import PORT, secret_name
from ctcd.errors import RolledBack
from ctcd.services import ServiceHandle

pytestmark = [pytest.mark.e2e, fake_only]
MODEL = "churn-k8s"
NAME = "ctcd-churn-k8s"


@pytest.fixture(scope="module")
def pods_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    fake = FakeCluster(tmp_path_factory.mktemp("cluster"), run_containers=True).start()
    yield fake
    fake.stop()


@pytest.fixture
def deployer(pods_cluster: FakeCluster, make_deployer: Any) -> KubernetesDeployer:
    backend: KubernetesDeployer = make_deployer(pods_cluster, replicas=2)
    return backend


@pytest.fixture(scope="module")
def first(model_factory: Any) -> Any:
    return model_factory(name=MODEL, kind="logistic_regression")


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
    deployer: KubernetesDeployer, pods_cluster: FakeCluster, first: Any, churn_model: Any
) -> None:
    handle = deployer.deploy_model(_config(first), timeout=240)
    assert handle.is_running()
    rows = churn_model.example.head(3)
    assert len(handle.predict(rows)) == 3
    pods = pods_cluster.items("pods")
    assert len(pods) == 2 and len({p["status"]["podIP"] for p in pods}) == 2
    assert _serving_on_every_pod(deployer) == [{first.version: 1.0}] * 2


@pytest.mark.parametrize(
    "strategy",
    [{"name": "canary", "steps": [0.2, 0.5], "interval_seconds": 1.5, "max_error_rate": 0.0},
     "replace", {"name": "blue_green", "verify_seconds": 1.5}],
    ids=["canary", "replace", "blue_green"],
)
def test_strategy_moves_every_pod_under_load_without_a_failed_request(
    strategy: Any, deployer: KubernetesDeployer, pods_cluster: FakeCluster, first: Any,
    model_factory: Any, churn_model: Any, load: Any,
) -> None:
    [serving] = deployer.find_model_server(model_name=MODEL)
    new = model_factory(name=MODEL, kind="logistic_regression")
    traffic = load(serving.endpoint, churn_model.example)
    traffic.wait_for(lambda t: t.sent >= 20, timeout=120)
    pods_before = {p["metadata"]["name"] for p in pods_cluster.items("pods")}

    handle = deployer.deploy_model(_config(new), strategy=strategy, timeout=180)
    traffic.wait_for(lambda t: t.versions[new.version] >= 30, timeout=120)
    traffic.stop()

    assert traffic.failed == 0, traffic.failures[:5]
    assert handle.model_version == new.version and handle.service_id == serving.service_id
    assert _serving_on_every_pod(deployer) == [{new.version: 1.0}] * 2
    assert {p["metadata"]["name"] for p in pods_cluster.items("pods")} == pods_before  # no restart
    configmap = pods_cluster.get("configmaps", NAME)
    assert configmap is not None and configmap["data"]["model_version"] == new.version
    history = deployer.describe_model_server(handle.service_id).history
    assert history[0].outcome == "succeeded" and history[0].config.model_version == new.version


def test_failing_canary_rolls_back_on_every_pod(
    deployer: KubernetesDeployer, pods_cluster: FakeCluster, churn_model: Any, load: Any,
    flaky_model_uri: str,
) -> None:
    [serving] = deployer.find_model_server(model_name=MODEL)
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
    deployment = pods_cluster.get("deployments", NAME)
    assert deployment is not None
    notes = deployment["metadata"]["annotations"]
    assert json.loads(notes["ctcd.io/config"])["model_version"] == serving.model_version
    assert "canary failed" in notes["ctcd.io/last-error"]
    configmap = pods_cluster.get("configmaps", NAME)
    assert configmap is not None and configmap["data"]["model_version"] == serving.model_version


def test_pods_started_later_serve_the_deployed_version_and_log(
    deployer: KubernetesDeployer, pods_cluster: FakeCluster
) -> None:
    [serving] = deployer.find_model_server(model_name=MODEL)
    deployer.stop_model_server(serving.service_id, timeout=60)
    assert not serving.is_running()
    assert pods_cluster.items("pods") == []

    started = deployer.start_model_server(serving.service_id, timeout=240)
    assert started.is_running() and started.model_version == serving.model_version
    assert _serving_on_every_pod(deployer) == [{serving.model_version: 1.0}] * 2
    answer = httpx.get(f"{started.endpoint}/v2/models/{MODEL}", timeout=10).json()
    assert answer["versions"] == [serving.model_version] or serving.model_version in str(answer)
    lines = list(deployer.get_logs(serving.service_id, tail=50))
    assert lines and all(line.startswith("[ctcd-churn-k8s-") for line in lines)
    assert any("listening" in line for line in lines)


def test_rollback_redeploys_the_previous_version(
    deployer: KubernetesDeployer, load: Any, churn_model: Any
) -> None:
    [serving] = deployer.find_model_server(model_name=MODEL)
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

