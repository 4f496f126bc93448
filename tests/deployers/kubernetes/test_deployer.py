"""The kubernetes deployer against a FAKE Kubernetes API server (``fake_api.py``): the
exact objects it sends, handles rebuilt from the cluster alone, lifecycle, and each bad
situation ending in a clear error with the previous version still serving.

No cluster runs on these machines. The real ``KubernetesHook`` and ``kubernetes`` client talk
HTTP to the fake, which keeps objects like the API server (resourceVersion, generation,
label selectors, the three patch types, 404/409) and plays the Deployment controller and
the kubelet. Here pods are ready without running anything (object level); the strategies
run against real model-server pods in ``test_pods.py``. Run the same tests against a
real cluster with ``CTCD_K8S_TEST_CLUSTER=1`` (see docs/how-to/kubernetes.md).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import fake_only

from ctcd.deployers import DeploymentConfig, get_deployer
from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.errors import (
    ConcurrentModification,
    Forbidden,
    ImagePullFailed,
    KServeUnavailable,
    NamespaceNotFound,
    RolloutFailed,
)
from ctcd.errors import DeploymentError, ModelServerNotFound
from ctcd.services import ServiceStatus

RUN_ID = "manual__2026-11-21T22:00:00+00:00"


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


@fake_only  # checks the exact objects and tracking URI the fake received
def test_first_deploy_sends_deployment_service_configmap_secret(
    cluster: Any, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, image="registry/ctcd-server:1.2",
                                                 replicas=2, cpu_limit="2")
    handle = deployer.deploy_model(config(), timeout=60)

    name = "ctcd-churn-classifier"
    deployment = cluster.get("deployments", name)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "registry/ctcd-server:1.2"
    assert container["command"] == ["python", "-m", "ctcd.serving"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                      "limits": {"cpu": "2", "memory": "1Gi"}}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["CTCD_SERVER_MODEL_URI"]["valueFrom"]["configMapKeyRef"] == {
        "name": name, "key": "model_uri"}
    assert env["CTCD_SERVER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{name}-admin", "key": "token"}
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

    configmap = cluster.get("configmaps", name)
    assert configmap["data"] == {"model_name": "churn-classifier",
                                 "model_uri": "models:/churn-classifier/1",
                                 "model_version": "1", "tracking_uri": "http://mlflow:5000"}
    secret = cluster.get("secrets", f"{name}-admin")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 24
    everything = json.dumps([deployment, configmap, cluster.get("services", name)])
    assert token not in everything and "secret@" not in everything
    service = cluster.get("services", name)
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8080

    assert handle.service_id == deployment["metadata"]["uid"]
    assert handle.backend == "kubernetes" and handle.model_version == "1"
    assert handle.endpoint.startswith("http://127.0.0.1:")
    # every patch of a built-in kind is a strategic merge patch, never a JSON patch of a dict
    for request in cluster.requests:
        if request["method"] == "PATCH" and isinstance(request["body"], dict):
            assert request["content_type"] == "application/strategic-merge-patch+json"


def test_find_rebuilds_handles_from_the_cluster_alone(cluster: Any, make_deployer: Any) -> None:
    made = make_deployer(cluster).deploy_model(config(), timeout=60)
    make_deployer(cluster).deploy_model(config(server="churn-shadow"), timeout=60)
    fresh: KubernetesDeployer = make_deployer(cluster)  # knows nothing but the cluster
    writes = len([r for r in cluster.requests if r["method"] != "GET"])

    assert {h.server_name for h in fresh.find_model_server()} == {"churn-classifier",
                                                                 "churn-shadow"}
    by_run = fresh.find_model_server(run_id=RUN_ID, server_name="churn-classifier")
    assert by_run == [made]
    assert fresh.find_model_server(run_id="manual__2026-11-21T22_00_00_00_00") == []
    assert fresh.find_model_server(model_version="2") == []
    assert fresh.find_model_server(service_id=made.service_id) == [made]
    assert len([r for r in cluster.requests if r["method"] != "GET"]) == writes  # pure query
    selectors = [r["query"].get("labelSelector") for r in cluster.sent("GET", "deployments")
                 if r["name"] is None]
    assert "ctcd.io/run-id=manual__2026-11-21T22_00_00_00_00" in selectors[1]
    with pytest.raises(ModelServerNotFound):
        fresh.status("no-such-id")


def test_backend_is_chosen_by_name(cluster: Any, make_deployer: Any) -> None:
    deployer = make_deployer(cluster)
    assert isinstance(get_deployer("kubernetes", settings=deployer.settings),
                      KubernetesDeployer)


def test_stop_scales_to_zero_start_scales_back_delete_removes_all(
    cluster: Any, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, replicas=2)
    handle = deployer.deploy_model(config(), timeout=60)
    name = "ctcd-churn-classifier"

    deployer.stop_model_server(handle.service_id, timeout=30)
    scale = [r for r in cluster.sent("PATCH", "deployments") if r["sub"] == "scale"]
    assert scale[-1]["body"] == {"spec": {"replicas": 0}}
    assert cluster.get("deployments", name)["spec"]["replicas"] == 0
    assert [p for p in cluster.items("pods")] == []
    assert deployer.status(handle.service_id) is ServiceStatus.UNREACHABLE
    assert deployer.describe_model_server(handle.service_id).desired_state == "stopped"

    started = deployer.start_model_server(handle.service_id, timeout=60)
    assert started.service_id == handle.service_id and started.model_version == "1"
    assert cluster.get("deployments", name)["spec"]["replicas"] == 2
    assert len(cluster.items("pods")) == 2

    deployer.delete_model_server(handle.service_id, timeout=30)
    for plural, obj in (("deployments", name), ("services", name), ("configmaps", name),
                        ("secrets", f"{name}-admin")):
        assert cluster.get(plural, obj) is None, plural
    assert deployer.find_model_server() == []


@fake_only
def test_missing_namespace_is_named_and_nothing_is_created(
    cluster: Any, make_deployer: Any
) -> None:
    deployer = make_deployer(cluster, namespace="ml-serving")
    with pytest.raises(NamespaceNotFound, match="namespace 'ml-serving' does not exist"):
        deployer.deploy_model(config(), timeout=30)
    assert cluster.sent("POST", "deployments") == []


@fake_only
def test_rbac_403_names_the_resource_and_the_missing_permission(
    cluster: Any, make_deployer: Any
) -> None:
    cluster.forbid("create", "deployments")
    with pytest.raises(Forbidden) as err:
        make_deployer(cluster).deploy_model(config(), timeout=30)
    assert "create Deployment default/ctcd-churn-classifier" in err.value.message
    assert "cannot create resource" in err.value.message and "RBAC" in err.value.message


@fake_only
def test_concurrent_patch_is_retried_on_409_then_fails_clearly(
    cluster: Any, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, conflict_retries=3)
    handle = deployer.deploy_model(config(), timeout=60)
    name = "ctcd-churn-classifier"

    cluster.concurrent_writer("deployments", name, times=2)
    deployer.stop_model_server(handle.service_id, timeout=30)  # records replicas: one patch
    notes = cluster.get("deployments", name)["metadata"]["annotations"]
    assert notes["ctcd.io/replicas"] == "1" and "other-writer" in notes  # both writes kept
    conflicts = [r for r in cluster.sent("PATCH", "deployments")
                 if r["body"] and "resourceVersion" in r["body"].get("metadata", {})]
    assert len(conflicts) >= 3

    cluster.concurrent_writer("deployments", name, times=10)
    with pytest.raises(ConcurrentModification, match="4 attempts refused with 409"):
        deployer.start_model_server(handle.service_id, timeout=30)


@fake_only
def test_unpullable_image_on_first_deploy_scales_to_zero(
    cluster: Any, make_deployer: Any
) -> None:
    cluster.unpullable.add("registry/ctcd-server:typo")
    deployer = make_deployer(cluster, image="registry/ctcd-server:typo")
    with pytest.raises(ImagePullFailed, match="cannot pull image 'registry/ctcd-server:typo'"):
        deployer.deploy_model(config(), timeout=60)
    deployment = cluster.get("deployments", "ctcd-churn-classifier")
    assert deployment["spec"]["replicas"] == 0
    assert "ImagePullBackOff" in deployment["metadata"]["annotations"]["ctcd.io/last-error"]


@fake_only
def test_unpullable_image_on_update_restores_the_template_and_keeps_serving(
    cluster: Any, make_deployer: Any
) -> None:
    make_deployer(cluster, image="registry/ctcd-server:1").deploy_model(config(), timeout=60)
    old_pods = {p["metadata"]["name"] for p in cluster.items("pods")}
    cluster.unpullable.add("registry/ctcd-server:2")
    upgraded = make_deployer(cluster, image="registry/ctcd-server:2")
    with pytest.raises(ImagePullFailed) as err:
        upgraded.deploy_model(config("2"), timeout=60)
    assert "rolled back to the previous one; version 1 keeps serving" in err.value.message
    undo = [r for r in cluster.sent("PATCH", "deployments")
            if r["content_type"] == "application/json-patch+json"]
    assert undo[0]["body"][0]["path"] == "/spec/template"
    deployment = cluster.get("deployments", "ctcd-churn-classifier")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry/ctcd-server:1")
    assert json.loads(deployment["metadata"]["annotations"]["ctcd.io/config"])[
        "model_version"] == "1"
    _wait(lambda: {p["metadata"]["name"] for p in cluster.items("pods")} == old_pods)


@fake_only
def test_rollout_past_its_progress_deadline_is_rolled_back(
    cluster: Any, make_deployer: Any
) -> None:
    make_deployer(cluster, image="registry/ctcd-server:1").deploy_model(config(), timeout=60)
    cluster.never_ready.add("registry/ctcd-server:slow")
    cluster.progress_deadline = 1.0
    with pytest.raises(RolloutFailed, match=r"has timed out progressing"):
        make_deployer(cluster, image="registry/ctcd-server:slow").deploy_model(
            config("2"), timeout=60)
    deployment = cluster.get("deployments", "ctcd-churn-classifier")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry/ctcd-server:1")


@fake_only
def test_rollout_not_ready_in_time_fails_with_progress(cluster: Any, make_deployer: Any) -> None:
    cluster.never_ready.add("registry/ctcd-server:slow")
    with pytest.raises(RolloutFailed, match=r"not ready within the timeout \(1/1 updated, 0/1"):
        make_deployer(cluster, image="registry/ctcd-server:slow").deploy_model(
            config(), timeout=3)


@fake_only  # a real cluster may have KServe installed
def test_kserve_mode_refuses_clearly_without_the_crd(cluster: Any, make_deployer: Any) -> None:
    with pytest.raises(KServeUnavailable, match="KServe's CRDs are not installed"):
        make_deployer(cluster, mode="kserve").deploy_model(config(), timeout=30)
    handle = make_deployer(cluster, mode="auto").deploy_model(config(), timeout=60)
    assert cluster.get("deployments", "ctcd-churn-classifier") is not None
    assert handle.model_version == "1"


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never reached"
        time.sleep(0.1)


def test_satisfies_the_contract_and_the_cli_drives_it(
    cluster: Any, make_deployer: Any, monkeypatch: pytest.MonkeyPatch
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
    assert cluster.get("deployments", "ctcd-churn-classifier")["spec"]["replicas"] == 0
    rollback = runner.invoke(app, ["models", "rollback", "churn-classifier"])
    assert rollback.exit_code == 1
    assert "no earlier successfully deployed version" in rollback.output


@fake_only
def test_deferrable_start_returns_before_the_pods_are_ready(
    cluster: Any, make_deployer: Any
) -> None:
    cluster.never_ready.add("registry/ctcd-server:slow")
    deployer = make_deployer(cluster, image="registry/ctcd-server:slow")
    handle = deployer.deploy_model(config(), timeout=60, wait=False)
    assert cluster.get("deployments", "ctcd-churn-classifier")["spec"]["replicas"] == 1
    assert deployer.status(handle.service_id) is not ServiceStatus.RUNNING
    deployer.stop_model_server(handle.service_id, timeout=30, force=True)  # as the operator
    assert cluster.get("deployments", "ctcd-churn-classifier")["spec"]["replicas"] == 0


@fake_only
def test_one_operation_at_a_time_per_server_through_a_lease(
    cluster: Any, make_deployer: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    def lease(holder: str, renewed: datetime) -> None:
        stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        cluster.objects[("leases", "default", "ctcd-churn-classifier-lock")] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ctcd-churn-classifier-lock", "resourceVersion": "1",
                         "uid": "u", "namespace": "default", "creationTimestamp": stamp},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60,
                     "acquireTime": stamp, "renewTime": stamp}}

    lease("worker-7-deploying", datetime.now(UTC))
    deployer = make_deployer(cluster)
    with pytest.raises(DeploymentError, match="holds Lease default/ctcd-churn-classifier-lock "
                                              r"\(holder worker-7-deploying"):
        deployer.deploy_model(config(), timeout=2)
    assert cluster.sent("POST", "deployments") == []

    lease("worker-7-died", datetime.now(UTC) - timedelta(minutes=5))  # expired: taken over
    handle = deployer.deploy_model(config(), timeout=60)
    assert handle.model_version == "1"
    assert cluster.get("leases", "ctcd-churn-classifier-lock") is None  # released
    taken = [r for r in cluster.sent("PATCH", "leases")]
    assert taken and taken[0]["body"]["spec"]["holderIdentity"] == deployer.leases.holder


@fake_only
def test_server_options_and_prediction_token_reach_the_pods_never_the_record(
    cluster: Any, make_deployer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCD_SERVER_MAX_BATCH_ROWS", "64")
    monkeypatch.setenv("CTCD_SERVER_TOKEN", "predict-secret-123")
    for name in [n for n in os.environ if n.startswith("CTCD_SERVER_")]:
        if name not in ("CTCD_SERVER_MAX_BATCH_ROWS", "CTCD_SERVER_TOKEN"):
            monkeypatch.delenv(name)  # only the options this test sets
    make_deployer(cluster).deploy_model(config(), timeout=60)
    name = "ctcd-churn-classifier"
    deployment = cluster.get("deployments", name)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CTCD_SERVER_MAX_BATCH_ROWS"]["value"] == "64"
    assert env["CTCD_SERVER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{name}-admin", "key": "prediction_token"}
    recorded = json.loads(deployment["metadata"]["annotations"]["ctcd.io/config"])
    assert recorded["server_options"] == {"max_batch_rows": "64"}
    assert recorded["requires_token"] is True
    secret = cluster.get("secrets", f"{name}-admin")
    assert base64.b64decode(secret["data"]["prediction_token"]).decode() == "predict-secret-123"
    assert "predict-secret-123" not in json.dumps(
        [deployment, cluster.get("configmaps", name), cluster.get("services", name)])

    monkeypatch.delenv("CTCD_SERVER_TOKEN")
    monkeypatch.delenv("CTCD_SERVER_MAX_BATCH_ROWS")
    from dataclasses import replace

    from ctcd.errors import ServerStartFailed

    with pytest.raises(ServerStartFailed, match="set CTCD_SERVER_TOKEN"):
        make_deployer(cluster).deploy_model(replace(config("2"), requires_token=True),
                                            timeout=30)
