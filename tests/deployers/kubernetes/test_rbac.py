"""The documented RBAC Role (``ctcd/deployers/kubernetes/rbac.yaml``, shown in the docs)
against a real API server enforcing ``Node,RBAC``: applied exactly as written, the backend
does everything under the ServiceAccount it binds; with a verb removed, the call that needs
it fails with the 403 the backend promises, naming the resource and the verb. And the
backend uses no API version newer than the ones the docs list."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import REAL_CLUSTER, Namespace, rbac_documents
from tests.deployers.kubernetes.test_deployer import config

from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.errors import Forbidden

ROOT = Path(__file__).resolve().parents[3]
BACKEND = ROOT / "plugins/ctcd/deployers/kubernetes"
# The API versions the docs say the backend needs (and Kubernetes 1.20 serves).
DOCUMENTED = {"v1", "apps/v1", "coordination.k8s.io/v1", "autoscaling/v1",
              "serving.kserve.io/v1beta1"}


def test_the_docs_show_the_role_as_the_file() -> None:
    """The docs include rbac.yaml itself (a snippet), and show no other copy of it."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    include = '--8<-- "plugins/ctcd/deployers/kubernetes/rbac.yaml"'
    assert any(include in page.read_text() for page in pages), "no page includes rbac.yaml"
    for page in pages:
        assert "name: ctcd-deployer" not in page.read_text(), (
            f"{page.relative_to(ROOT)} shows its own copy of the Role: include rbac.yaml")


@pytest.mark.skipif(REAL_CLUSTER, reason="creates and deletes the namespaces ml-serving and "
                    "airflow the Role names: not in someone's real cluster")
def test_the_role_applied_as_written_allows_everything_the_backend_does(
    kube_cluster: Any, make_deployer: Any
) -> None:
    docs = rbac_documents()
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    [subject] = binding["subjects"]
    serving = kube_cluster.namespace(docs[0]["metadata"]["namespace"])  # ml-serving
    home = kube_cluster.namespace(subject["namespace"])  # airflow
    for ns in (serving, home):
        if serving.admin.get(f"/api/v1/namespaces/{ns.namespace}") is None:
            serving.admin.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.namespace}})
    serving.apply_role(docs)  # exactly as written
    token = home.token(subject["name"])
    try:
        deployer: KubernetesDeployer = make_deployer(serving, token=token)
        handle = deployer.deploy_model(config(), timeout=60)
        assert deployer.find_model_server(running=False) == [handle]
        assert deployer.describe_model_server(handle.service_id).desired_state == "running"
        list(deployer.get_logs(handle.service_id, tail=5))
        deployer.stop_model_server(handle.service_id, timeout=30)
        deployer.start_model_server(handle.service_id, timeout=60)
        deployer.delete_model_server(handle.service_id, timeout=30)
        assert deployer.find_model_server() == []
        from ctcd.deployers import ScorerConfig

        scorer = ScorerConfig(name="churn-scorer", model_uri="models:/churn/1", stream="s",
                              tracking_uri="http://mlflow:5000")
        assert deployer.deploy_scorer(scorer, timeout=60).state == "running"
        deployer.restart_scorer("churn-scorer", timeout=60)
        deployer.stop_scorer("churn-scorer", timeout=30)
        deployer.delete_scorer("churn-scorer", timeout=30)
        if serving.audit_log:
            refused = [e for e in serving.sent() if e["responseStatus"]["code"] == 403]
            assert refused == []
            used = {e["objectRef"].get("apiGroup", "") + "/" + e["objectRef"]["apiVersion"]
                    for e in serving.sent()}
            assert {u.lstrip("/") for u in used} <= DOCUMENTED
    finally:
        serving.delete()
        home.delete()


@pytest.mark.parametrize(("resource", "verb", "action", "refused"), [
    ("deployments/scale", "patch", "stop", "scale Deployment"),
    ("leases", "create", "deploy", "create Lease"),
    ("pods", "list", "deploy", "list Pods"),
    ("secrets", "create", "deploy", "create Secret"),
], ids=["scale-patch", "leases-create", "pods-list", "secrets-create"])
def test_a_verb_missing_from_the_role_is_a_403_naming_resource_and_verb(
    cluster: Namespace, make_deployer: Any, resource: str, verb: str, action: str,
    refused: str,
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster)
    handle = deployer.deploy_model(config(), timeout=60) if action == "stop" else None
    docs = copy.deepcopy(cluster.role())
    for rule in docs[0]["rules"]:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    cluster.apply_role(docs)
    group = resource.split("/")[0]
    with pytest.raises(Forbidden) as err:
        if handle is not None:
            deployer.stop_model_server(handle.service_id, timeout=30)
        else:
            deployer.deploy_model(config(), timeout=30)
    message = err.value.message
    assert refused in message and f"cannot {verb} resource" in message
    assert f'"{group}' in message or group in message
    assert "ctcd-deployer Role" in message and cluster.namespace in message


def test_the_backend_uses_no_api_newer_than_documented() -> None:
    """Every API client class and ``apiVersion`` in the backend's code is one the docs list
    (the test control plane, Kubernetes 1.20, serves them all; a newer one would have to be
    documented and would not run there)."""
    source = "\n".join(p.read_text() for p in BACKEND.glob("*.py"))
    clients = set(re.findall(r"client\.(\w+Api)\b", source))
    versions = {"CoreV1Api": "v1", "AppsV1Api": "apps/v1",
                "CoordinationV1Api": "coordination.k8s.io/v1"}
    assert clients <= {*versions, "CustomObjectsApi"}, clients
    written = set(re.findall(r'"apiVersion": "([^"]+)"', source))
    written |= {f"{group}/{version}" for group, version in re.findall(
        r'KSERVE_GROUP, KSERVE_VERSION[^=]*= "([^"]+)", "([^"]+)"', source)}
    assert written <= DOCUMENTED, written - DOCUMENTED
    assert {versions[c] for c in clients if c in versions} <= DOCUMENTED
