"""Fixtures of the kubernetes deployer's tests: a real API server, a namespace per test
holding the documented RBAC Role, and deployers running under that Role's ServiceAccount.

See :mod:`.clusters` (which cluster), :mod:`.control_plane` (etcd, kube-apiserver and
kube-controller-manager on loopback) and :mod:`.kubelet` (the test node).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import REAL_CLUSTER, Admin, Namespace, namespace_name
from tests.deployers.kubernetes.control_plane import ADMIN_TOKEN, ControlPlane
from tests.deployers.kubernetes.kubelet import Kubelet

from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.settings import KubernetesSettings, Settings


class Cluster:
    """The session's cluster: :meth:`namespace` makes a test's namespace."""

    def __init__(self, admin: Admin, server: str, ca: str | None,
                 plane: ControlPlane | None = None, kubelet: Kubelet | None = None) -> None:
        self.admin, self.server, self.ca = admin, server, ca
        self.plane, self.kubelet = plane, kubelet

    def namespace(self, name: str | None = None) -> Namespace:
        return Namespace(self.admin, name or namespace_name(), server=self.server, ca=self.ca,
                         kubelet=self.kubelet,
                         audit_log=self.plane.audit_log if self.plane else None)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from kubernetes import config

    if REAL_CLUSTER:
        api = config.new_client_from_config(context=os.environ.get("CTCD_K8S_TEST_CONTEXT"))
        conf = api.configuration
        yield Cluster(Admin(api), conf.host, conf.ssl_ca_cert)
        return
    workdir = tmp_path_factory.mktemp("kube")
    plane = ControlPlane(workdir).start()
    try:
        kubelet = Kubelet(plane, workdir).start()
        try:
            api = config.new_client_from_config(
                str(plane.kubeconfig(workdir / "admin.kubeconfig", ADMIN_TOKEN)))
            yield Cluster(Admin(api), plane.url, str(plane.ca), plane, kubelet)
            api.close()
        finally:
            kubelet.stop()
    finally:
        plane.stop()


@pytest.fixture
def cluster(kube_cluster: Cluster) -> Iterator[Namespace]:
    """A fresh namespace with the documented Role; pods become ready without running
    anything (object-level tests)."""
    ns = kube_cluster.namespace().create()
    yield ns
    ns.delete()


@pytest.fixture(scope="module")
def pods_namespace(kube_cluster: Cluster) -> Iterator[Namespace]:
    """A module's namespace whose pods run for real (the test kubelet starts each pod's
    container command as a local process)."""
    ns = kube_cluster.namespace().create()
    if kube_cluster.kubelet is not None:
        kube_cluster.kubelet.run_containers(ns.namespace)
    yield ns
    ns.delete()


DeployerFactory = Callable[..., KubernetesDeployer]


@pytest.fixture
def make_deployer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., KubernetesDeployer]:
    """``make_deployer(namespace, token=None, **kubernetes_settings)``: a deployer of that
    namespace whose KubernetesHook connection is a kubeconfig with the ServiceAccount token
    bound to the documented Role (or ``token``)."""

    def make(ns: Namespace, token: str | None = None, **overrides: Any) -> KubernetesDeployer:
        kubeconfig = ns.kubeconfig(tmp_path / f"kubeconfig-{len(list(tmp_path.iterdir()))}",
                                   token or ns.token())
        conn_id = f"kube_test_{abs(hash(str(kubeconfig))) % 10**8}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
            "conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}))
        options: dict[str, Any] = {"namespace": ns.namespace, "conn_id": conn_id,
                                   "poll_interval": 0.1}
        if ns.kubelet is not None:
            options.update(service_type="NodePort", service_url="http://127.0.0.1:{node_port}",
                           pod_url="http://{pod_ip}:" + str(ns.pod_port))
        options.update(overrides)
        settings = Settings(home=tmp_path / "ctcd", kubernetes=KubernetesSettings(**options))
        return KubernetesDeployer(settings)

    return make
