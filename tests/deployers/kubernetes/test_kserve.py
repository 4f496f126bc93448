"""``kserve`` mode against a real API server with KServe's own InferenceService CRD
installed (the published manifest of KServe v0.19.0, ``data/``, with its full schema; see
:func:`for_kubernetes_1_20` for the one change 1.20 needs): the
API server validates and prunes what the backend sends against that schema, applies its
merge patches and keeps ``status`` a subresource, as on a cluster with KServe.

What is NOT here is KServe's controller (and Knative under it): revisions, routing and
traffic. A small stand-in below writes the status KServe's controller would (one predictor
revision per predictor spec, a failed revision for an image the test calls unpullable,
``canaryTrafficPercent`` splitting traffic between the last rolled-out revision and the
newest); so these tests check the objects and each patch of a strategy as stored by the
API server, not KServe's routing.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.deployers.kubernetes.clusters import Admin, ApiError, Namespace, needs_test_kubelet

from ctcd.deployers import DeploymentConfig
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.errors import VersionRejected

pytestmark = needs_test_kubelet  # installs a CRD: not in someone's real cluster
NAME = "ctcd-churn-classifier"
CRD = Path(__file__).parent / "data" / "kserve-v0.19.0-inferenceservices-crd.yaml.gz"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class KServeStandIn:
    """Writes an InferenceService's ``status`` as KServe's controller would, in brief."""

    def __init__(self, admin: Admin, namespace: str) -> None:
        self.admin, self.ns = admin, namespace
        self.unpullable: set[str] = set()
        self.revisions: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> KServeStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        path = f"/apis/serving.kserve.io/v1beta1/namespaces/{self.ns}/inferenceservices"
        while not self._stop.wait(0.1):
            try:
                for isvc in self.admin.request("GET", path)["items"]:
                    status = self._status(isvc)
                    if status != isvc.get("status"):
                        self.admin.request(
                            "PATCH", f"{path}/{isvc['metadata']['name']}/status",
                            {"status": status}, "application/merge-patch+json")
            except ApiError:
                continue  # changed meanwhile: the next round sees it

    def _status(self, isvc: dict[str, Any]) -> dict[str, Any]:
        name, predictor = isvc["metadata"]["name"], isvc["spec"]["predictor"]
        status = json.loads(json.dumps(isvc.get("status") or {}))
        component = status.setdefault("components", {}).setdefault("predictor", {})
        template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        revisions = self.revisions.setdefault(name, {})
        key = json.dumps(template, sort_keys=True)  # the traffic split is not a revision
        revisions.setdefault(key, len(revisions) + 1)
        latest = f"{name}-predictor-{revisions[key]:05d}"
        component["latestCreatedRevision"] = latest
        if predictor["containers"][0]["image"] in self.unpullable:
            status["conditions"] = [{"type": "Ready", "status": "False",
                                     "reason": "RevisionFailed",
                                     "message": f'Revision "{latest}" failed with message: '
                                                "Back-off pulling image."}]
            return status
        component["latestReadyRevision"] = latest
        rolled = component.get("latestRolledoutRevision")
        percent = predictor.get("canaryTrafficPercent")
        if percent is not None and rolled and rolled != latest:
            component["traffic"] = [
                {"revisionName": rolled, "percent": 100 - percent, "latestRevision": False},
                {"revisionName": latest, "percent": percent, "latestRevision": True}]
        else:
            component["latestRolledoutRevision"] = latest
            component["traffic"] = [{"revisionName": latest, "percent": 100,
                                     "latestRevision": True}]
        status["address"] = {"url": f"http://{name}.{self.ns}.svc.cluster.local"}
        status["url"] = f"http://{name}.{self.ns}.example.com"
        status["conditions"] = [{"type": "Ready", "status": "True"}]
        return status


def for_kubernetes_1_20(schema: Any) -> Any:
    """The manifest without its empty-string defaults (``default: ""`` on the ``name`` of
    object references, 196 of them): Kubernetes 1.20 reads an empty default as none and
    refuses the CRD. Nothing else is changed; no field ctcd sends has such a default."""
    if isinstance(schema, dict):
        return {k: for_kubernetes_1_20(v) for k, v in schema.items()
                if not (k == "default" and v == "")}
    if isinstance(schema, list):
        return [for_kubernetes_1_20(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def kserve_crd(kube_cluster: Any) -> Iterator[None]:
    """KServe's CRD, installed for this module only (``auto`` mode elsewhere must not see
    it)."""
    admin: Admin = kube_cluster.admin
    admin.request("POST", CRDS, for_kubernetes_1_20(
        yaml.safe_load(gzip.decompress(CRD.read_bytes()))))
    name = "inferenceservices.serving.kserve.io"
    deadline = time.monotonic() + 60
    while not any(c["type"] == "Established" and c["status"] == "True"
                  for c in ((admin.get(f"{CRDS}/{name}") or {}).get("status") or {})
                  .get("conditions") or []):
        assert time.monotonic() < deadline, "KServe's CRD was not established"
        time.sleep(0.2)
    yield
    admin.request("DELETE", f"{CRDS}/{name}")
    while admin.get(f"{CRDS}/{name}") is not None:
        time.sleep(0.2)


@pytest.fixture
def kserve(kserve_crd: None, cluster: Namespace) -> Iterator[KServeStandIn]:
    controller = KServeStandIn(cluster.admin, cluster.namespace).start()
    yield controller
    controller.stop()


def config(version: str) -> DeploymentConfig:
    return DeploymentConfig(model_name="churn-classifier", model_version=version,
                            model_uri=f"models:/churn-classifier/{version}",
                            tracking_uri="http://mlflow:5000", dag_id="continuous_training",
                            task_id="deploy")


def predictor_patches(cluster: Namespace) -> list[Any]:
    """``canaryTrafficPercent`` of each predictor patch the deployer sent, as the API
    server's audit log recorded it."""
    return [e["requestObject"]["spec"]["predictor"].get("canaryTrafficPercent", "absent")
            for e in cluster.sent("patch", "inferenceservices")
            if "spec" in (e.get("requestObject") or {})
            and e["responseStatus"]["code"] == 200]


def test_kserve_mode_creates_an_inference_service_its_schema_accepts(
    kserve: KServeStandIn, cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, mode="auto",
                                                 image="registry/ctcd-server:1")
    handle = deployer.deploy_model(config("1"), timeout=30)

    isvc = cluster.get("inferenceservices", NAME)
    assert isvc is not None and cluster.get("deployments", NAME) is None
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    # as stored after the schema's pruning: nothing the backend sent was dropped
    sent = [e["requestObject"] for e in cluster.sent("create", "inferenceservices")]
    assert len(sent) == 1 and sent[0]["spec"] == isvc["spec"]
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
    assert handle.endpoint == f"http://{NAME}.{cluster.namespace}.svc.cluster.local"
    assert make_deployer(cluster, mode="kserve").find_model_server(
        model_name="churn-classifier") == [handle]


def test_kserve_canary_steps_are_canary_traffic_percent_patches(
    kserve: KServeStandIn, cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, mode="kserve")
    deployer.deploy_model(config("1"), timeout=30)
    handle = deployer.deploy_model(
        config("2"), strategy={"name": "canary", "steps": [0.1, 0.5], "interval_seconds": 0.2},
        timeout=60)

    # load at 0%, then 10%, 50%, then promoted (the field removed by the merge patch)
    assert predictor_patches(cluster) == [0, 10, 50, None]
    isvc = cluster.get("inferenceservices", NAME)
    assert isvc is not None and "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    assert [t["percent"] for t in traffic] == [100] and traffic[0]["latestRevision"]
    assert handle.model_version == "2" and handle.strategy == "canary"
    assert deployer.deploy_model(config("2"), timeout=30).model_version == "2"  # unchanged
    assert predictor_patches(cluster) == [0, 10, 50, None]


def test_kserve_revision_that_cannot_start_is_rejected_and_the_old_one_kept(
    kserve: KServeStandIn, cluster: Namespace, make_deployer: Any
) -> None:
    make_deployer(cluster, mode="kserve",
                  image="registry/ctcd-server:1").deploy_model(config("1"), timeout=30)
    kserve.unpullable.add("registry/ctcd-server:2")
    with pytest.raises(VersionRejected, match="traffic stays on version 1"):
        make_deployer(cluster, mode="kserve", image="registry/ctcd-server:2").deploy_model(
            config("2"), strategy="blue_green", timeout=30)
    isvc = cluster.get("inferenceservices", NAME)
    assert isvc is not None
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == "registry/ctcd-server:1"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert json.loads(isvc["metadata"]["annotations"]["ctcd.io/config"])["model_version"] == "1"


def test_kserve_stop_start_delete(
    kserve: KServeStandIn, cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, mode="kserve")
    handle = deployer.deploy_model(config("1"), timeout=30)
    deployer.stop_model_server(handle.service_id)
    isvc = cluster.get("inferenceservices", NAME)
    assert isvc is not None
    assert isvc["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"
    assert deployer.describe_model_server(handle.service_id).desired_state == "stopped"
    deployer.start_model_server(handle.service_id, timeout=30)
    isvc = cluster.get("inferenceservices", NAME)
    assert isvc is not None and "serving.kserve.io/stop" not in isvc["metadata"]["annotations"]
    deployer.delete_model_server(handle.service_id)
    assert cluster.get("inferenceservices", NAME) is None
    assert cluster.get("secrets", f"{NAME}-admin") is None
