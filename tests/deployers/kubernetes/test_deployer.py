"""The kubernetes deployer against a real API server (:mod:`.control_plane`): the objects it
sends as the API server stored them (after validation and defaulting), handles rebuilt
from the cluster alone, lifecycle, and each bad situation ending in a clear error with the
previous version still serving.

Each test has a namespace of its own with the documented Role; the deployer runs under its
ServiceAccount's token. Deployments are rolled by the real controller manager; here pods
become ready without running anything (the test kubelet, object level). The strategies
run against real model-server pods in ``test_pods.py``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import replace
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import Namespace, needs_test_kubelet

from ctcd.deployers import DeploymentConfig, get_deployer
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.errors import (
    Forbidden,
    ImagePullFailed,
    KServeUnavailable,
    NamespaceNotFound,
    RolloutFailed,
)
from ctcd.errors import ModelServerNotFound, ServerStartFailed
from ctcd.services import ServiceStatus

RUN_ID = "manual__2026-11-21T22:00:00+00:00"
NAME = "ctcd-churn-classifier"


def config(version: str = "1", **extra: Any) -> DeploymentConfig:
    # On a real cluster the pods load a real model: CTCD_K8S_TEST_MODEL_URI (any version
    # label works), from the tracking server in CTCD_K8S_TRACKING_URI.
    uri = os.environ.get("CTCD_K8S_TEST_MODEL_URI") or f"models:/churn-classifier/{version}"
    return DeploymentConfig(
        model_name="churn-classifier", model_uri=uri,
        model_version=version, mlflow_run_id="abc123", dag_id="continuous_training",
        run_id=RUN_ID, task_id="deploy",
        tracking_uri=os.environ.get("CTCD_K8S_TRACKING_URI", "http://user:secret@mlflow:5000"),
        **extra,
    )


def _wait(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} never reached"
        time.sleep(0.1)


@needs_test_kubelet  # pods ready without an image; a NodePort endpoint on loopback
def test_first_deploy_creates_what_the_api_server_accepts(
    cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, image="registry/ctcd-server:1.2",
                                                 replicas=2, cpu_limit="2")
    handle = deployer.deploy_model(config(), timeout=60)

    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "registry/ctcd-server:1.2"
    assert container["command"] == ["python", "-m", "ctcd.serving"]
    # as stored: the API server defaults the probes' scheme, timeouts and thresholds
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready",
                                                      "port": "http", "scheme": "HTTP"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                      "limits": {"cpu": "2", "memory": "1Gi"}}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["CTCD_SERVER_MODEL_URI"]["valueFrom"]["configMapKeyRef"] == {
        "name": NAME, "key": "model_uri"}
    assert env["CTCD_SERVER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{NAME}-admin", "key": "token"}
    labels = deployment["metadata"]["labels"]
    assert labels["ctcd.io/model-name"] == "churn-classifier"
    assert labels["ctcd.io/model-version"] == "1"
    assert labels["ctcd.io/dag-id"] == "continuous_training"
    assert labels["ctcd.io/run-id"] == "manual__2026-11-21T22_00_00_00_00"  # a valid label
    assert labels["ctcd.io/task-id"] == "deploy"
    notes = deployment["metadata"]["annotations"]
    recorded = json.loads(notes["ctcd.io/config"])
    assert recorded["run_id"] == RUN_ID and recorded["mlflow_run_id"] == "abc123"
    assert recorded["tracking_uri"] == "http://mlflow:5000"  # credentials never recorded
    # rolled by the controller manager: one ReplicaSet, two ready pods of its template
    [replica_set] = cluster.items("replicasets")
    assert replica_set["status"]["readyReplicas"] == 2
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in cluster.pods()} == {
        replica_set["metadata"]["labels"]["pod-template-hash"]}

    configmap = cluster.get("configmaps", NAME)
    assert configmap is not None
    assert configmap["data"] == {"model_name": "churn-classifier",
                                 "model_uri": "models:/churn-classifier/1",
                                 "model_version": "1", "tracking_uri": "http://mlflow:5000"}
    secret = cluster.get("secrets", f"{NAME}-admin")
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 24
    service = cluster.get("services", NAME)
    assert service is not None
    everything = json.dumps([deployment, configmap, service])
    assert token not in everything and "secret@" not in everything
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8080
    node_port = service["spec"]["ports"][0]["nodePort"]  # allocated by the API server
    assert handle.service_id == deployment["metadata"]["uid"]
    assert handle.backend == "kubernetes" and handle.model_version == "1"
    assert handle.endpoint == f"http://127.0.0.1:{node_port}"
    # every patch of a built-in kind is a strategic merge patch or a JSON patch
    for event in cluster.sent("patch"):
        assert event["requestObject"] is not None


def test_find_rebuilds_handles_from_the_cluster_alone(
    cluster: Namespace, make_deployer: Any
) -> None:
    made = make_deployer(cluster).deploy_model(config(), timeout=60)
    make_deployer(cluster).deploy_model(config(server="churn-shadow"), timeout=60)
    fresh: KubernetesDeployer = make_deployer(cluster)  # knows nothing but the cluster
    writes = cluster.writes() if cluster.audit_log else 0

    assert {h.server_name for h in fresh.find_model_server()} == {"churn-classifier",
                                                                 "churn-shadow"}
    by_run = fresh.find_model_server(run_id=RUN_ID, server_name="churn-classifier")
    assert by_run == [made]
    assert fresh.find_model_server(run_id="manual__2026-11-21T22_00_00_00_00") == []
    assert fresh.find_model_server(model_version="2") == []
    assert fresh.find_model_server(service_id=made.service_id) == [made]
    with pytest.raises(ModelServerNotFound):
        fresh.status("no-such-id")
    if cluster.audit_log:
        assert cluster.writes() == writes  # a pure query
        lists = [e["requestURI"] for e in cluster.sent("list", "deployments")]
        assert any("ctcd.io%2Frun-id%3Dmanual__2026-11-21T22_00_00_00_00" in uri
                   for uri in lists), lists


def test_backend_is_chosen_by_name(cluster: Namespace, make_deployer: Any) -> None:
    deployer = make_deployer(cluster)
    assert isinstance(get_deployer("kubernetes", settings=deployer.settings),
                      KubernetesDeployer)


def test_stop_scales_to_zero_start_scales_back_delete_removes_all(
    cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, replicas=2)
    handle = deployer.deploy_model(config(), timeout=60)

    deployer.stop_model_server(handle.service_id, timeout=30)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["ctcd.io/replicas"] == "2"
    assert cluster.items("pods") == []  # stop waits until the pods are gone
    assert deployer.status(handle.service_id) is ServiceStatus.UNREACHABLE
    assert deployer.describe_model_server(handle.service_id).desired_state == "stopped"

    started = deployer.start_model_server(handle.service_id, timeout=60)
    assert started.service_id == handle.service_id and started.model_version == "1"
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert len(cluster.pods()) == 2

    deployer.delete_model_server(handle.service_id, timeout=30)
    for plural, obj in (("deployments", NAME), ("services", NAME), ("configmaps", NAME),
                        ("secrets", f"{NAME}-admin")):
        assert cluster.get(plural, obj) is None, plural
    assert deployer.find_model_server() == []
    # the garbage collector removes the ReplicaSet and the pods
    _wait(lambda: cluster.items("replicasets") == [] and cluster.items("pods") == [],
          what="the ReplicaSet and pods collected")


def test_missing_namespace_is_named_and_nothing_is_created(
    cluster: Namespace, make_deployer: Any, kube_cluster: Any
) -> None:
    missing = kube_cluster.namespace("ml-serving-missing")  # never created
    # With rights in every namespace, the API server says the namespace is missing...
    binding = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
    cluster.admin.request("POST", binding, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{cluster.namespace}-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ctcd-admin",
                      "namespace": cluster.namespace}]})
    try:
        deployer = make_deployer(missing, token=cluster.token("ctcd-admin"))
        with pytest.raises(NamespaceNotFound, match="namespace 'ml-serving-missing' does not"):
            deployer.deploy_model(config(), timeout=30)
    finally:
        cluster.admin.request("DELETE", f"{binding}/{cluster.namespace}-admin")
    # ...with the documented Role (bound in another namespace) RBAC refuses first: the
    # error names the namespace as a possible cause.
    deployer = make_deployer(missing, token=cluster.token())
    with pytest.raises(Forbidden) as err:
        deployer.deploy_model(config(), timeout=30)
    assert "'ml-serving-missing'" in err.value.message
    assert "CTCD_K8S_NAMESPACE" in err.value.message


@needs_test_kubelet
def test_unpullable_image_on_first_deploy_scales_to_zero(
    cluster: Namespace, make_deployer: Any
) -> None:
    cluster.kubelet.unpullable.add("registry/ctcd-server:typo")
    deployer = make_deployer(cluster, image="registry/ctcd-server:typo")
    with pytest.raises(ImagePullFailed, match="cannot pull image 'registry/ctcd-server:typo'"):
        deployer.deploy_model(config(), timeout=60)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    # the reason the deployer saw on its second poll: the kubelet's retry may not have
    # turned ErrImagePull into ImagePullBackOff yet
    assert re.search(r"(ErrImagePull|ImagePullBackOff).*registry/ctcd-server:typo",
                     deployment["metadata"]["annotations"]["ctcd.io/last-error"])


@needs_test_kubelet
def test_unpullable_image_on_update_restores_the_template_and_keeps_serving(
    cluster: Namespace, make_deployer: Any
) -> None:
    make_deployer(cluster, image="registry/ctcd-server:1").deploy_model(config(), timeout=60)
    old_pods = {p["metadata"]["name"] for p in cluster.pods()}
    cluster.kubelet.unpullable.add("registry/ctcd-server:2")
    upgraded = make_deployer(cluster, image="registry/ctcd-server:2")
    with pytest.raises(ImagePullFailed) as err:
        upgraded.deploy_model(config("2"), timeout=60)
    assert "rolled back to the previous one; version 1 keeps serving" in err.value.message
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry/ctcd-server:1")
    assert json.loads(deployment["metadata"]["annotations"]["ctcd.io/config"])[
        "model_version"] == "1"
    # the controller went back to the old ReplicaSet: its pods never stopped
    _wait(lambda: {p["metadata"]["name"] for p in cluster.pods()} == old_pods,
          what="only the old pods left")
    assert upgraded.find_model_server(running=False)[0].model_version == "1"


@needs_test_kubelet
def test_rollout_not_ready_in_time_is_rolled_back(cluster: Namespace, make_deployer: Any
                                                  ) -> None:
    make_deployer(cluster, image="registry/ctcd-server:1").deploy_model(config(), timeout=60)
    cluster.kubelet.never_ready.add("registry/ctcd-server:slow")
    with pytest.raises(RolloutFailed, match=r"not ready within the timeout \(1/1 updated, 1/1"):
        make_deployer(cluster, image="registry/ctcd-server:slow").deploy_model(
            config("2"), timeout=8)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry/ctcd-server:1")


@needs_test_kubelet
def test_first_rollout_not_ready_in_time_fails_with_progress(
    cluster: Namespace, make_deployer: Any
) -> None:
    cluster.kubelet.never_ready.add("registry/ctcd-server:slow")
    with pytest.raises(RolloutFailed, match=r"not ready within the timeout \(1/1 updated, 0/1"):
        make_deployer(cluster, image="registry/ctcd-server:slow").deploy_model(
            config(), timeout=5)


def test_kserve_mode_refuses_clearly_without_the_crd(
    cluster: Namespace, make_deployer: Any
) -> None:
    with pytest.raises(KServeUnavailable, match="KServe's CRDs are not installed"):
        make_deployer(cluster, mode="kserve").deploy_model(config(), timeout=30)
    handle = make_deployer(cluster, mode="auto").deploy_model(config(), timeout=60)
    assert cluster.get("deployments", NAME) is not None
    assert handle.model_version == "1"


def test_satisfies_the_contract_and_the_cli_drives_it(
    cluster: Namespace, make_deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ctcd.cli import build
    from ctcd.deployers import ModelDeployer, SupportsRollback

    deployer: KubernetesDeployer = make_deployer(cluster)
    assert isinstance(deployer, ModelDeployer) and isinstance(deployer, SupportsRollback)
    handle = deployer.deploy_model(config(), timeout=60)
    for key, value in deployer.k8s.model_dump().items():  # the CLI reads the environment
        if value is not None:
            monkeypatch.setenv(f"CTCD_K8S_{key.upper()}", str(value))
    monkeypatch.setenv("CTCD_DEPLOYER", "kubernetes")
    runner, app = CliRunner(), build()

    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["service_id"] == handle.service_id and row["backend"] == "kubernetes"
    described = runner.invoke(app, ["models", "describe", "churn-classifier", "--json"])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["details"]["kind"] == "Deployment" and info["details"]["replicas"] == 1
    assert info["desired_state"] == "running"
    assert info["history"][0]["outcome"] == "succeeded"
    stopped = runner.invoke(app, ["models", "stop", handle.service_id[:8]])
    assert stopped.exit_code == 0, stopped.output
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    rollback = runner.invoke(app, ["models", "rollback", "churn-classifier"])
    assert rollback.exit_code == 1
    assert "no earlier successfully deployed version" in rollback.output


@needs_test_kubelet
def test_deferrable_start_returns_before_the_pods_are_ready(
    cluster: Namespace, make_deployer: Any
) -> None:
    cluster.kubelet.never_ready.add("registry/ctcd-server:slow")
    deployer = make_deployer(cluster, image="registry/ctcd-server:slow")
    handle = deployer.deploy_model(config(), timeout=60, wait=False)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert deployer.status(handle.service_id) is not ServiceStatus.RUNNING
    deployer.stop_model_server(handle.service_id, timeout=30, force=True)  # as the operator
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None and deployment["spec"]["replicas"] == 0


def test_server_options_and_prediction_token_reach_the_pods_never_the_record(
    cluster: Namespace, make_deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_SERVER_MAX_BATCH_ROWS", "64")
    monkeypatch.setenv("CTCD_SERVER_TOKEN", "predict-secret-123")
    for name in [n for n in os.environ if n.startswith("CTCD_SERVER_")]:
        if name not in ("CTCD_SERVER_MAX_BATCH_ROWS", "CTCD_SERVER_TOKEN"):
            monkeypatch.delenv(name)  # only the options this test sets
    make_deployer(cluster).deploy_model(config(), timeout=60)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CTCD_SERVER_MAX_BATCH_ROWS"]["value"] == "64"
    assert env["CTCD_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{NAME}-admin", "key": "prediction_token"}
    recorded = json.loads(deployment["metadata"]["annotations"]["ctcd.io/config"])
    assert recorded["server_options"] == {"max_batch_rows": "64"}
    assert recorded["requires_token"] is True
    secret = cluster.get("secrets", f"{NAME}-admin")
    assert secret is not None
    assert base64.b64decode(secret["data"]["prediction_token"]).decode() == "predict-secret-123"
    assert "predict-secret-123" not in json.dumps(
        [deployment, cluster.get("configmaps", NAME), cluster.get("services", NAME)])

    # An option dropped from the environment is gone from the pods' template too (started
    # again with it: a stopped server is rolled without running a strategy in its pods).
    monkeypatch.delenv("CTCD_SERVER_MAX_BATCH_ROWS")
    deployer = make_deployer(cluster)
    [handle] = deployer.find_model_server()
    deployer.stop_model_server(handle.service_id, timeout=30)
    deployer.deploy_model(config(), timeout=60)
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "CTCD_SERVER_MAX_BATCH_ROWS" not in names and "CTCD_SERVER_TOKEN" in names

    monkeypatch.delenv("CTCD_SERVER_TOKEN")
    with pytest.raises(ServerStartFailed, match="set CTCD_SERVER_TOKEN"):
        make_deployer(cluster).deploy_model(replace(config("2"), requires_token=True),
                                            timeout=30)
