"""Writes under concurrency against a real API server (:mod:`.control_plane`): every
write of the backend is a read-modify-write with the ``resourceVersion`` it read
(:meth:`ctcd.deployers.kubernetes.api.Kube.update`), so the API server refuses a stale one
with 409 Conflict and the backend reads and sends it again; none is lost."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import Namespace
from tests.deployers.kubernetes.test_deployer import NAME, config

from ctcd.deployers.kubernetes import KubernetesDeployer
from ctcd.deployers.kubernetes.errors import ConcurrentModification


def test_two_deployers_patching_one_deployment_lose_no_write(
    cluster: Namespace, make_deployer: Any
) -> None:
    """Two deployers (two Airflow workers) annotate the same Deployment at once: every
    write is a read-modify-write with the resourceVersion it read, so the API server
    refuses the stale one with 409 and it is read and sent again; none is lost."""
    make_deployer(cluster).deploy_model(config(), timeout=60)
    writers = [make_deployer(cluster, conflict_retries=50) for _ in range(2)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for n in range(15):
                writers[i].cluster.annotate(NAME, {f"ctcd.io/test-{i}-{n}": str(n)})
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    deployment = cluster.get("deployments", NAME)
    assert deployment is not None
    notes = deployment["metadata"]["annotations"]
    assert {f"ctcd.io/test-{i}-{n}" for i in range(2) for n in range(15)} <= set(notes)
    if cluster.audit_log:
        refused = [e for e in cluster.sent("patch", "deployments")
                   if e["responseStatus"]["code"] == 409]
        assert refused, "the two writers never collided (no 409): the test proves nothing"


def test_a_stale_resource_version_is_refused_and_retried(
    cluster: Namespace, make_deployer: Any
) -> None:
    deployer: KubernetesDeployer = make_deployer(cluster, conflict_retries=2)
    deployer.deploy_model(config(), timeout=60)
    stale = cluster.get("deployments", NAME)
    assert stale is not None
    deployer.cluster.annotate(NAME, {"ctcd.io/moved-on": "yes"})  # resourceVersion moves on
    reads = []

    def read_stale_first() -> dict[str, Any]:
        reads.append(1)
        return stale if len(reads) == 1 else deployer.cluster.deployment(NAME)

    deployer.cluster.kube.update(
        "patch", read_stale_first, lambda _: {"metadata": {"annotations": {"ctcd.io/x": "1"}}},
        lambda body: deployer.cluster.kube.apps.patch_namespaced_deployment(
            NAME, cluster.namespace, body, _preload_content=False))
    # refused with 409, read again, sent again (more than once if the controller manager
    # wrote the Deployment's status in between: that moves the resourceVersion too)
    assert len(reads) >= 2
    after = cluster.get("deployments", NAME)
    assert after is not None and after["metadata"]["annotations"]["ctcd.io/x"] == "1"

    with pytest.raises(ConcurrentModification, match="3 attempts refused with 409"):
        deployer.cluster.kube.update(
            "patch Deployment", lambda: stale,
            lambda _: {"metadata": {"annotations": {"ctcd.io/y": "1"}}},
            lambda body: deployer.cluster.kube.apps.patch_namespaced_deployment(
                NAME, cluster.namespace, body, _preload_content=False))
