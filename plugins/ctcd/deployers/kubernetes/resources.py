"""The Kubernetes objects of one model server, as plain dicts (what is sent to the API).

One server named ``S`` (``DeploymentConfig.server_name``) is, in ``deployment`` mode:

* ``ConfigMap ctcd-S``: the model a pod loads when it starts (URI, name, version, tracking
  URI). A new version is loaded into the running pods by the strategy, then written here,
  so a pod that restarts later starts with it (no rolling restart per model version).
* ``Secret ctcd-S-admin``: the server's admin token (pods read it from the Secret; it is
  never in an annotation, a handle or the ConfigMap).
* ``Deployment ctcd-S``: the model-server pods; rolling update with ``maxUnavailable: 0``,
  readiness ``/v2/health/ready``, liveness ``/v2/health/live``, requests and limits.
* ``Service ctcd-S``: port 8080 to the pods.

In ``kserve`` mode an ``InferenceService ctcd-S`` replaces the Deployment and the Service.
Every object carries the labels of :func:`labels`; the Deployment (or InferenceService)
carries the handle's config in annotations, so handles are rebuilt from the cluster alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ctcd.deployers.base import DeploymentConfig
from ctcd.settings import KubernetesSettings

PORT = 8080
CONTAINER = "server"
KSERVE_CONTAINER = "kserve-container"
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
APP = "app.kubernetes.io/name"
PREFIX = "ctcd.io/"
CONFIG = PREFIX + "config"  # DeploymentConfig as JSON
STRATEGY = PREFIX + "strategy"
DEPLOYED_AT = PREFIX + "deployed-at"
HISTORY = PREFIX + "history"  # earlier successfully deployed configs, newest first
REPLICAS = PREFIX + "replicas"  # replicas to restore on start after a stop
TEMPLATE_HASH = PREFIX + "template-hash"
LAST_ERROR = PREFIX + "last-error"
HISTORY_LIMIT = 10
PREDICTION_TOKEN = "prediction_token"  # key of the Secret, when predictions need a token

# Lineage labels (label values are sanitized; the exact values are in the config annotation).
LINEAGE = {
    "server_name": PREFIX + "server",
    "model_name": PREFIX + "model-name",
    "model_version": PREFIX + "model-version",
    "dag_id": PREFIX + "dag-id",
    "run_id": PREFIX + "run-id",
    "task_id": PREFIX + "task-id",
}


def resource_name(server_name: str) -> str:
    """``ctcd-<server>`` as a DNS-1035 label short enough for pod names; a hash suffix keeps
    names distinct when the server name had to be changed to fit."""
    clean = re.sub(r"[^a-z0-9-]+", "-", server_name.lower()).strip("-")
    clean = re.sub(r"-{2,}", "-", clean)
    if clean == server_name and len(clean) <= 40:
        return f"ctcd-{clean}"
    digest = hashlib.sha1(server_name.encode()).hexdigest()[:6]
    return f"ctcd-{clean[:33].rstrip('-') or 'server'}-{digest}"


def secret_name(name: str) -> str:
    return f"{name}-admin"


def label_value(value: str | None) -> str:
    """A valid label value (63 characters of ``[A-Za-z0-9_.-]``, alphanumeric ends)."""
    if not value:
        return ""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)


def selector_labels(name: str) -> dict[str, str]:
    return {APP: "ctcd-model-server", INSTANCE: name}


def labels(name: str, config: DeploymentConfig) -> dict[str, str]:
    out = {**selector_labels(name), MANAGED_BY: "ctcd"}
    for field, key in LINEAGE.items():
        value = label_value(getattr(config, field) if field != "server_name"
                            else config.server_name)
        if value:
            out[key] = value
    return out


def selector(**wanted: str | None) -> str:
    """A label selector of ctcd's servers, narrowed by lineage fields (sanitized)."""
    parts = [f"{MANAGED_BY}=ctcd"]
    for field, value in wanted.items():
        if value is not None:
            parts.append(f"{LINEAGE[field]}={label_value(value)}")
    return ",".join(parts)


def server_annotations(
    config: DeploymentConfig, *, strategy: str, deployed_at: str,
    history: list[dict[str, Any]], replicas: int,
) -> dict[str, str]:
    return {
        CONFIG: json.dumps(config.to_dict(), sort_keys=True),
        STRATEGY: strategy,
        DEPLOYED_AT: deployed_at,
        HISTORY: json.dumps(history[:HISTORY_LIMIT]),
        REPLICAS: str(replicas),
    }


def model_data(config: DeploymentConfig, tracking_uri: str) -> dict[str, str]:
    return {
        "model_name": config.model_name,
        "model_uri": config.model_uri,
        "model_version": config.model_version,
        "tracking_uri": tracking_uri,
    }


def config_map(name: str, config: DeploymentConfig, tracking_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels(name, config)},
        "data": model_data(config, tracking_uri),
    }


def secret(
    name: str, config: DeploymentConfig, token: str, prediction_token: str | None = None
) -> dict[str, Any]:
    """The admin token, and the prediction token when the server requires one."""
    data = {"token": token}
    if prediction_token:
        data[PREDICTION_TOKEN] = prediction_token
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name(name), "labels": labels(name, config)},
        "stringData": data,
    }


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def container(name: str, config: DeploymentConfig, k8s: KubernetesSettings) -> dict[str, Any]:
    """The model-server container: ``python -m ctcd.serving`` configured by environment
    (``CTCD_SERVER_*``), the model from the ConfigMap, the admin token from the Secret."""

    def from_map(key: str) -> dict[str, Any]:
        return {"valueFrom": {"configMapKeyRef": {"name": name, "key": key}}}

    return {
        "name": CONTAINER,
        "image": k8s.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": ["python", "-m", "ctcd.serving"],
        "env": [
            {"name": "CTCD_SERVER_MODEL_URI", **from_map("model_uri")},
            {"name": "CTCD_SERVER_MODEL_NAME", **from_map("model_name")},
            {"name": "CTCD_SERVER_MODEL_VERSION", **from_map("model_version")},
            {"name": "MLFLOW_TRACKING_URI", **from_map("tracking_uri")},
            {"name": "CTCD_SERVER_HOST", "value": "0.0.0.0"},
            {"name": "CTCD_SERVER_PORT", "value": str(PORT)},
            {"name": "CTCD_SERVER_WORKERS", "value": str(config.workers)},
            {"name": "CTCD_SERVER_ADMIN_TOKEN", "valueFrom": {
                "secretKeyRef": {"name": secret_name(name), "key": "token"}}},
            # the recorded non-secret server settings (batching, request log, ...)
            *({"name": f"CTCD_SERVER_{option.upper()}", "value": value}
              for option, value in sorted(config.server_options.items())),
            *([{"name": "CTCD_SERVER_TOKEN", "valueFrom": {
                "secretKeyRef": {"name": secret_name(name), "key": PREDICTION_TOKEN}}}]
              if config.requires_token else []),
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Loading a model takes seconds to minutes: the startup probe holds liveness off.
        "startupProbe": _probe("/v2/health/live", periodSeconds=2, failureThreshold=150),
        "readinessProbe": _probe("/v2/health/ready", periodSeconds=2, failureThreshold=2),
        "livenessProbe": _probe("/v2/health/live", periodSeconds=10, failureThreshold=3),
        "resources": {
            "requests": {"cpu": k8s.cpu_request, "memory": k8s.memory_request},
            "limits": {"cpu": k8s.cpu_limit, "memory": k8s.memory_limit},
        },
    }


def pod_template(name: str, config: DeploymentConfig, k8s: KubernetesSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container(name, config, k8s)],
        "terminationGracePeriodSeconds": 30,
    }
    if k8s.service_account:
        spec["serviceAccountName"] = k8s.service_account
    return {"metadata": {"labels": selector_labels(name)}, "spec": spec}


def template_hash(template: dict[str, Any]) -> str:
    """What ctcd asked for, so a change of image, resources or workers is seen as one even
    though the API server fills in defaults."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def deployment(
    name: str, config: DeploymentConfig, k8s: KubernetesSettings, *,
    annotations: dict[str, str], progress_deadline: int,
) -> dict[str, Any]:
    template = pod_template(name, config, k8s)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "labels": labels(name, config),
            "annotations": {**annotations, TEMPLATE_HASH: template_hash(template)},
        },
        "spec": {
            "replicas": k8s.replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": progress_deadline,
            "revisionHistoryLimit": 5,
            "template": template,
        },
    }


def service(name: str, config: DeploymentConfig, k8s: KubernetesSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": labels(name, config)},
        "spec": {
            "type": k8s.service_type,
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def inference_service(
    name: str, config: DeploymentConfig, k8s: KubernetesSettings, *,
    annotations: dict[str, str], tracking_uri: str, canary_percent: int | None = None,
) -> dict[str, Any]:
    """A KServe ``InferenceService`` with the model server as its custom predictor container.

    The model is in the container's environment, so each version is its own revision and
    ``canaryTrafficPercent`` splits traffic between the last rolled-out one and the new one.
    """
    main = container(name, config, k8s)
    main["name"] = KSERVE_CONTAINER
    values = model_data(config, tracking_uri)
    env_names = {"CTCD_SERVER_MODEL_URI": "model_uri", "CTCD_SERVER_MODEL_NAME": "model_name",
                 "CTCD_SERVER_MODEL_VERSION": "model_version",
                 "MLFLOW_TRACKING_URI": "tracking_uri"}
    main["env"] = [
        {"name": e["name"], "value": values[env_names[e["name"]]]} if e["name"] in env_names
        else e
        for e in main["env"]
    ]
    main["ports"] = [{"containerPort": PORT, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        main[probe]["httpGet"]["port"] = PORT
    predictor: dict[str, Any] = {"minReplicas": k8s.replicas, "containers": [main]}
    if k8s.service_account:
        predictor["serviceAccountName"] = k8s.service_account
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    return {
        "apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}", "kind": "InferenceService",
        "metadata": {"name": name, "labels": labels(name, config), "annotations": annotations},
        "spec": {"predictor": predictor},
    }
