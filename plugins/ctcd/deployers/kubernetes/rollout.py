"""Watching a Deployment roll out: done, still progressing, or failed (and why).

Observed from the Deployment's status (observedGeneration, updated/ready/available
replicas, the ``Progressing`` condition) and its pods' container states, the same signals
``kubectl rollout status`` reads, plus the pod-level causes it does not name.
"""

from __future__ import annotations

from typing import Any

from ctcd.deployers.kubernetes.errors import ImagePullFailed, RolloutFailed

PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CRASHES = ("CrashLoopBackOff",)


def rollout_done(deployment: dict[str, Any]) -> bool:
    """Every replica runs the current template and is available, and no old pod is left."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    replicas = spec.get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation", 0)
    return (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) == replicas
        and status.get("availableReplicas", 0) >= replicas
        and status.get("readyReplicas", 0) >= replicas
        and status.get("replicas", 0) == replicas
    )


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if (condition.get("type") == "Progressing" and condition.get("status") == "False"
                and condition.get("reason") == "ProgressDeadlineExceeded"):
            return str(condition.get("message") or "progress deadline exceeded")
    return None


def pod_problem(pod: dict[str, Any], seen_before: set[str]) -> Exception | None:
    """The error a pod's container state means, if it cannot become ready by waiting.

    An image pull failure counts once it is seen on two polls in a row (the kubelet retries
    a transient registry error); an invalid image name or a crash loop counts at once.
    """
    name = pod.get("metadata", {}).get("name", "?")
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason"), waiting.get("message") or ""
        if reason in PULL_FAILURES:
            key = f"{name}/{reason in PULL_FAILURES}"
            if reason == "InvalidImageName" or key in seen_before:
                return ImagePullFailed(
                    f"pod {name} cannot pull image {status.get('image')!r}: {reason}"
                    f"{': ' + message if message else ''}. Check the image name and tag "
                    "(CTCD_K8S_IMAGE), that it was pushed, and the pull secret."
                )
            seen_before.add(key)
        if reason in CRASHES:
            return RolloutFailed(
                f"pod {name}: the model server keeps exiting ({reason}, "
                f"{status.get('restartCount', 0)} restarts){': ' + message if message else ''}"
            )
    return None


def progress(deployment: dict[str, Any]) -> str:
    status = deployment.get("status") or {}
    replicas = deployment.get("spec", {}).get("replicas", 1)
    return (f"{status.get('updatedReplicas', 0)}/{replicas} updated, "
            f"{status.get('readyReplicas', 0)}/{replicas} ready")
