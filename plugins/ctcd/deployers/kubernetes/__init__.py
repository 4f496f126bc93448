"""The ``kubernetes`` backend: model servers as Deployments + Services (or KServe
InferenceServices) in a namespace, through Airflow's ``KubernetesHook``."""

from __future__ import annotations

from ctcd.deployers.kubernetes.deployer import KubernetesDeployer

__all__ = ["KubernetesDeployer"]
