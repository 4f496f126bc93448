"""``kserve`` mode against a FAKE Kubernetes API server that serves KServe's API group and
plays its controller in brief (one predictor revision per predictor spec, a failed revision
for an image that cannot be pulled, ``canaryTrafficPercent`` splitting traffic between the
last rolled-out revision and the newest). No cluster or KServe runs here: these tests check
the InferenceService sent and each patch of a strategy, not KServe's own routing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import fake_only
from tests.deployers.kubernetes.fake_api import FakeCluster

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.errors import VersionRejected

pytestmark = fake_only
NAME = "ctcd-churn-classifier"


@pytest.fixture
def kserve_cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    fake = FakeCluster(tmp_path / "cluster", kserve=True).start()
    yield fake
    fake.stop()


def config(version: str) -> DeploymentConfig:
    return DeploymentConfig(model_name="churn-classifier", model_version=version,
                            model_uri=f"models:/churn-classifier/{version}",
                            tracking_uri="http://mlflow:5000", dag_id="continuous_training",
                            task_id="deploy")


def predictor_patches(cluster: FakeCluster) -> list[Any]:
    return [r["body"]["spec"]["predictor"].get("canaryTrafficPercent", "absent")
            for r in cluster.sent("PATCH", "inferenceservices")
            if "spec" in (r["body"] or {})]


def test_kserve_mode_creates_an_inference_service(
    kserve_cluster: FakeCluster, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(kserve_cluster, mode="auto",
                                                 image="registry/ctcd-server:1")
    handle = deployer.deploy_model(config("1"), timeout=30)

    isvc = kserve_cluster.get("inferenceservices", NAME)
    assert isvc is not None and kserve_cluster.get("deployments", NAME) is None
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor and predictor["minReplicas"] == 1
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "registry/ctcd-server:1"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["CTCD_SERVER_MODEL_URI"] == "models:/churn-classifier/1"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["CTCD_SERVER_ADMIN_TOKEN"] == {"secretKeyRef": {"name": f"{NAME}-admin",
                                                               "key": "token"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert isvc["metadata"]["labels"]["ctcd.io/model-version"] == "1"
    assert json.loads(isvc["metadata"]["annotations"]["ctcd.io/config"])["model_version"] == "1"
    assert handle.service_id == isvc["metadata"]["uid"]
    assert handle.endpoint == f"http://{NAME}.default.svc.cluster.local"
    assert make_deployer(kserve_cluster, mode="kserve").find_model_server(
        model_name="churn-classifier") == [handle]


def test_kserve_canary_steps_are_canary_traffic_percent_patches(
    kserve_cluster: FakeCluster, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(kserve_cluster, mode="kserve")
    deployer.deploy_model(config("1"), timeout=30)
    handle = deployer.deploy_model(
        config("2"), strategy={"name": "canary", "steps": [0.1, 0.5], "interval_seconds": 0.2},
        timeout=60)

    # load at 0%, then 10%, 50%, then promoted (the field removed)
    assert predictor_patches(kserve_cluster) == [0, 10, 50, None]
    patches = kserve_cluster.sent("PATCH", "inferenceservices")
    assert {r["content_type"] for r in patches} == {"application/merge-patch+json"}
    isvc = kserve_cluster.get("inferenceservices", NAME)
    assert isvc is not None
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    assert [t["percent"] for t in traffic] == [100] and traffic[0]["latestRevision"]
    assert handle.model_version == "2" and handle.strategy == "canary"
    assert deployer.deploy_model(config("2"), timeout=30).model_version == "2"  # unchanged
    assert predictor_patches(kserve_cluster) == [0, 10, 50, None]


def test_kserve_revision_that_cannot_start_is_rejected_and_the_old_one_kept(
    kserve_cluster: FakeCluster, make_deployer: Any
) -> None:
    make_deployer(kserve_cluster, mode="kserve",
                  image="registry/ctcd-server:1").deploy_model(config("1"), timeout=30)
    kserve_cluster.unpullable.add("registry/ctcd-server:2")
    with pytest.raises(VersionRejected, match="traffic stays on version 1"):
        make_deployer(kserve_cluster, mode="kserve", image="registry/ctcd-server:2").deploy_model(
            config("2"), strategy="blue_green", timeout=30)
    isvc = kserve_cluster.get("inferenceservices", NAME)
    assert isvc is not None
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "registry/ctcd-server:1"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert json.loads(isvc["metadata"]["annotations"]["ctcd.io/config"])["model_version"] == "1"


def test_kserve_stop_start_delete(kserve_cluster: FakeCluster, make_deployer: Any) -> None:
    deployer: KubernetesDeployer = make_deployer(kserve_cluster, mode="kserve")
    handle = deployer.deploy_model(config("1"), timeout=30)
    deployer.stop_model_server(handle.service_id)
    isvc = kserve_cluster.get("inferenceservices", NAME)
    assert isvc is not None
    assert isvc["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"
    assert deployer.describe_model_server(handle.service_id).desired_state == "stopped"
    deployer.start_model_server(handle.service_id, timeout=30)
    isvc = kserve_cluster.get("inferenceservices", NAME)
    assert isvc is not None and "serving.kserve.io/stop" not in isvc["metadata"]["annotations"]
    deployer.delete_model_server(handle.service_id)
    assert kserve_cluster.get("inferenceservices", NAME) is None
    assert kserve_cluster.get("secrets", f"{NAME}-admin") is None
