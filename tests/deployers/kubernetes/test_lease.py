"""One operation at a time per model server, through a real ``coordination.k8s.io``
Lease on a real API server: one held by another holder is waited for, then refused naming
the holder; an expired one is taken over; the deployer's own is released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.deployers.kubernetes.clusters import Namespace
from tests.deployers.kubernetes.test_deployer import NAME, config

from ctcd.errors import DeploymentError


def test_one_operation_at_a_time_per_server_through_a_lease(
    cluster: Namespace, make_deployer: Any
) -> None:
    def lease(holder: str, renewed: datetime) -> None:
        stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        path = f"{cluster.path('leases')}/{NAME}-lock"
        if cluster.get("leases", f"{NAME}-lock"):
            cluster.admin.request("DELETE", path)
        cluster.admin.request("POST", cluster.path("leases"), {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": f"{NAME}-lock"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60,
                     "acquireTime": stamp, "renewTime": stamp}})

    lease("worker-7-deploying", datetime.now(UTC))
    deployer = make_deployer(cluster)
    with pytest.raises(DeploymentError, match=f"holds Lease {cluster.namespace}/{NAME}-lock "
                                              r"\(holder worker-7-deploying"):
        deployer.deploy_model(config(), timeout=2)
    assert cluster.get("deployments", NAME) is None

    lease("worker-7-died", datetime.now(UTC) - timedelta(minutes=5))  # expired: taken over
    handle = deployer.deploy_model(config(), timeout=60)
    assert handle.model_version == "1"
    assert cluster.get("leases", f"{NAME}-lock") is None  # released
    if cluster.audit_log:
        taken = [e for e in cluster.sent("patch", "leases")
                 if e["responseStatus"]["code"] == 200]
        assert taken and taken[0]["requestObject"]["spec"]["holderIdentity"] == (
            deployer.leases.holder)
