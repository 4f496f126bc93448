"""Errors of the ``kubernetes`` deployer: each names the resource and the cause.

All are :class:`ctcd.errors.DeploymentError` subclasses, raised after the previous version
is serving again (or, for a first deployment, after the new server was scaled to zero).
"""

from __future__ import annotations

from ctcd.errors import DeploymentError, ServerStartFailed


class KubernetesError(DeploymentError):
    """The Kubernetes API refused or failed a call (the message has its status and reason)."""


class NamespaceNotFound(KubernetesError):
    def __init__(self, namespace: str, what: str) -> None:
        super().__init__(
            f"{what}: namespace {namespace!r} does not exist. Create it (`kubectl create "
            f"namespace {namespace}`) or set CTCD_K8S_NAMESPACE to an existing one."
        )


class Forbidden(KubernetesError):
    def __init__(self, what: str, reason: str, namespace: str) -> None:
        super().__init__(
            f"{what}: forbidden by the cluster's RBAC ({reason}). Grant the Airflow service "
            f"account the ctcd-deployer Role (ctcd/deployers/kubernetes/rbac.yaml) in "
            f"namespace {namespace!r}. If that namespace does not exist, RBAC refuses before "
            "the API server can say so: create it, or set CTCD_K8S_NAMESPACE."
        )


class ConcurrentModification(KubernetesError):
    """A write kept losing to other writers (409 on ``resourceVersion``)."""


class ImagePullFailed(ServerStartFailed):
    """A pod cannot pull the model-server image (``ErrImagePull`` / ``ImagePullBackOff``)."""


class RolloutFailed(ServerStartFailed):
    """New pods did not become ready (progress deadline, crash loop or timeout)."""


class KServeUnavailable(KubernetesError):
    """``kserve`` mode was asked for, but the InferenceService CRD is not installed."""
