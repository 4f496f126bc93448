"""Fixtures of the kubernetes deployer's tests: a cluster and a deployer that talks to it.

By default the cluster is the FAKE API server of ``fake_api.py`` (no cluster runs on these
machines), reached through a kubeconfig by the real ``KubernetesHook`` and ``kubernetes``
client. With ``CTCD_K8S_TEST_CLUSTER=1`` the same tests run against the current kubeconfig
context instead (kind or minikube; see docs/how-to/kubernetes.md), in a namespace of
their own; tests that need the fake's fault injection are skipped there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import REAL, RealCluster
from tests.deployers.kubernetes.fake_api import FakeCluster

from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.settings import KubernetesSettings, Settings


def start_cluster(workdir: Path, **options: Any) -> Any:
    if REAL:
        return RealCluster()
    return FakeCluster(workdir, **options).start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """An object-level cluster: pods become ready without running anything."""
    fake = start_cluster(tmp_path / "cluster")
    yield fake
    fake.stop()


DeployerFactory = Callable[..., KubernetesDeployer]


@pytest.fixture
def make_deployer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., KubernetesDeployer]:
    """``make_deployer(cluster, **kubernetes_settings)``: a deployer whose KubernetesHook
    connection points at ``cluster`` (a kubeconfig file for the fake)."""

    def make(cluster: Any, **overrides: Any) -> KubernetesDeployer:
        if REAL:
            conn_id = "kube_real"
            context = os.environ.get("CTCD_K8S_TEST_CONTEXT")
            monkeypatch.setenv("AIRFLOW_CONN_KUBE_REAL", json.dumps({
                "conn_type": "kubernetes",
                "extra": {"cluster_context": context} if context else {}}))
            options: dict[str, Any] = {"namespace": cluster.namespace}
        else:
            kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
            conn_id = "kube_fake"
            monkeypatch.setenv("AIRFLOW_CONN_KUBE_FAKE", json.dumps({
                "conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}))
            options = {
                "namespace": "default", "service_type": "NodePort",
                "service_url": "http://127.0.0.1:{node_port}",
                "pod_url": "http://{pod_ip}:" + str(cluster.pod_port),
            }
        options.update(conn_id=conn_id, poll_interval=0.1)
        options.update(overrides)
        settings = Settings(home=tmp_path / "ctcd", kubernetes=KubernetesSettings(**options))
        return KubernetesDeployer(settings)

    return make
