"""The cluster the Kubernetes tests run against, one namespace per test.

By default: the real control plane of :mod:`.control_plane` (etcd, kube-apiserver,
kube-controller-manager on loopback) with the test kubelet of :mod:`.kubelet`. With
``CTCD_K8S_TEST_CLUSTER=1``: the cluster of the current kubeconfig context (or
``CTCD_K8S_TEST_CONTEXT``), e.g. kind or minikube; tests that need the test kubelet (pods
on loopback, an image that cannot be pulled) are skipped there with the reason.

Either way each test gets a fresh namespace holding the deployer's RBAC Role exactly as
the docs show it (``ctcd/deployers/kubernetes/rbac.yaml``: the same rules, bound in that
namespace to a ServiceAccount), and the deployer runs with that ServiceAccount's token, so
every call the tests make is authorized by the documented Role and nothing more. The
tests' own setup and checks use admin credentials.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REAL_CLUSTER = os.environ.get("CTCD_K8S_TEST_CLUSTER") == "1"
needs_test_kubelet = pytest.mark.skipif(
    REAL_CLUSTER, reason="needs the test kubelet (pods as local processes, image pull "
    "failures set by the test); a real cluster cannot be made to fail that way")
RBAC = Path(__file__).resolve().parents[3] / "plugins/ctcd/deployers/kubernetes/rbac.yaml"
AUDIT_USER = "system:serviceaccount:{ns}:ctcd-deployer"
PATHS = {
    "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
    "replicasets": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "leases": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
    "roles": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "rolebindings": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "inferenceservices": "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices",
}


def rbac_documents() -> list[dict[str, Any]]:
    """The Role and RoleBinding as documented."""
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status, self.body = status, body


class Admin:
    """Admin requests to the cluster, through a ``kubernetes`` ApiClient (so any kubeconfig
    works: token, client certificate, exec plugin)."""

    def __init__(self, api_client: Any) -> None:
        self.client = api_client

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", **query: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            answer = self.client.call_api(
                path, method, query_params=list(query.items()), body=body,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False)
        except ApiException as err:
            raise ApiError(err.status, json.loads(err.body or "{}")) from None
        data = answer.data
        return json.loads(data) if data else {}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise


class Namespace:
    """One test's namespace: the documented Role bound to a ServiceAccount there, admin
    reads of its objects, and (on the local control plane) the test kubelet and the API
    server's audit log of what the deployer sent."""

    def __init__(self, admin: Admin, name: str, *, server: str, ca: str | None,
                 kubelet: Any = None, audit_log: Path | None = None) -> None:
        self.admin, self.namespace, self.kubelet = admin, name, kubelet
        self.server, self.ca, self.audit_log = server, ca, audit_log
        self.pod_port = kubelet.pod_port if kubelet is not None else None

    def create(self, role: list[dict[str, Any]] | None = None) -> Namespace:
        self.admin.request("POST", "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": self.namespace}})
        self.apply_role(role or self.role())
        return self

    def role(self) -> list[dict[str, Any]]:
        """The documented Role and RoleBinding, moved to this namespace and bound to its
        ServiceAccount ``ctcd-deployer`` (the rules untouched)."""
        docs = copy.deepcopy(rbac_documents())
        for doc in docs:
            doc["metadata"]["namespace"] = self.namespace
            for subject in doc.get("subjects", []):
                subject.update(name="ctcd-deployer", namespace=self.namespace)
        return docs

    def apply_role(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            plural = doc["kind"].lower() + "s"
            path = PATHS[plural].format(ns=doc["metadata"]["namespace"])
            try:
                self.admin.request("POST", path, doc)
            except ApiError as err:
                if err.status != 409:
                    raise
                self.admin.request("PUT", f"{path}/{doc['metadata']['name']}", doc)

    def token(self, account: str = "ctcd-deployer", namespace: str | None = None) -> str:
        """A token of the ServiceAccount (created with it if needed)."""
        ns = namespace or self.namespace
        base = f"/api/v1/namespaces/{ns}"
        if self.admin.get(f"{base}/serviceaccounts/{account}") is None:
            self.admin.request("POST", f"{base}/serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        secret = f"{account}-token-test"
        if self.admin.get(f"{base}/secrets/{secret}") is None:
            self.admin.request("POST", f"{base}/secrets", {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": secret,
                             "annotations": {"kubernetes.io/service-account.name": account}}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.admin.get(f"{base}/secrets/{secret}") or {}
            if (found.get("data") or {}).get("token"):
                import base64

                return base64.b64decode(found["data"]["token"]).decode()
            time.sleep(0.1)
        raise AssertionError(f"no token for ServiceAccount {ns}/{account} within 30s")

    def kubeconfig(self, path: Path, token: str) -> Path:
        cluster: dict[str, Any] = {"server": self.server}
        if self.ca:
            cluster["certificate-authority"] = self.ca
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    def delete(self) -> None:
        try:
            self.admin.request("DELETE", f"/api/v1/namespaces/{self.namespace}")
        except ApiError as err:
            if err.status != 404:
                raise

    # -- reading, as the fake's tests did ----------------------------------------------------

    def path(self, plural: str) -> str:
        return PATHS.get(plural, "/api/v1/namespaces/{ns}/" + plural).format(ns=self.namespace)

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.admin.get(f"{self.path(plural)}/{name}")

    def items(self, plural: str, selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else {}
        items: list[dict[str, Any]] = self.admin.request("GET", self.path(plural),
                                                         **query)["items"]
        return items

    def pods(self) -> list[dict[str, Any]]:
        """The pods not being deleted."""
        return [p for p in self.items("pods") if not p["metadata"].get("deletionTimestamp")]

    def sent(self, verb: str | None = None, resource: str | None = None
             ) -> list[dict[str, Any]]:
        """The deployer's requests in this namespace as the API server's audit log recorded
        them (``verb``: create, get, list, patch, delete...; ``resource``: deployments...)."""
        if self.audit_log is None:
            pytest.skip("the request log is the local control plane's audit log")
        user = AUDIT_USER.format(ns=self.namespace)
        events = []
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event["user"]["username"] == user and ref.get("namespace") == self.namespace
                    and (verb is None or event["verb"] == verb)
                    and (resource is None or ref.get("resource") == resource)):
                events.append(event)
        return events

    def writes(self) -> int:
        return len([e for e in self.sent()
                    if e["verb"] not in ("get", "list", "watch")])


def namespace_name() -> str:
    return f"ctcd-test-{uuid.uuid4().hex[:8]}"
