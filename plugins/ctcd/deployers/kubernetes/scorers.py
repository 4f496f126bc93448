"""Streaming scorers in Kubernetes: the ``kubernetes`` backend's
:class:`ctcd.deployers.base.SupportsScorers`.

A scorer named ``N`` is, in the backend's namespace:

* ``ConfigMap ctcd-scorer-N``: the scorer's settings as environment variables
  (``CTCD_SCORER_MODEL_URI``, ``_STREAM``, ``_GROUP``, its options, the tracking URI). No
  secret.
* ``Secret ctcd-scorer-N-redis``: the Redis URL, with its password when the deploying
  process's ``CTCD_SCORER_REDIS_URL`` has one (the recorded config never does), and the
  token ``POST /reload`` needs (generated at the first deploy, kept after).
* ``Deployment ctcd-scorer-N``: ``replicas`` pods of ``python -m ctcd.streaming``, each a
  consumer of the group named after its pod (downward API). Probes use the scorer's health
  port: startup and readiness ``/readyz`` (model loaded, stream read), liveness ``/healthz``
  (the loop turned within ``stall_seconds``: a hung scorer is restarted and its entries
  claimed by the others). A checksum of the ConfigMap in the pod template makes a changed
  config a rolling update (``maxUnavailable: 0``: the old pods score until new ones are
  ready). ``terminationGracePeriodSeconds`` lets a stopping pod finish its batch.

It is found by its labels (``app.kubernetes.io/name=ctcd-streaming-scorer``,
``ctcd.io/scorer``) and its config is in the Deployment's annotations, so the cluster is the
record, as for model servers. Stop and start scale to zero and back; restart is a rolling
restart; a new champion reaches a scorer that follows an alias through ``POST /reload`` to
every ready pod (no restart: it swaps between batches), and a pinned version through
:meth:`KubernetesScorers.deploy` (a rolling update).

Nothing is lost by any of these: a pod acknowledges an entry only in the transaction that
writes its prediction; a stopping pod finishes its batch; a killed one leaves its entries
pending and another replica claims them (``XAUTOCLAIM`` after ``min_idle_ms``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx

from ctcd.deployers.base import DEFAULT_TIMEOUT, redact_uri
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes.cluster import Cluster, instance, ready
from ctcd.deployers.kubernetes.servers import utcnow
from ctcd.deployers.scorers import ReplicaStatus, ScorerConfig, ScorerInfo, ScorerNotFound
from ctcd.errors import DeploymentError, InvalidParams, ServerStartFailed
from ctcd.settings import KubernetesSettings

log = logging.getLogger(__name__)

APP_NAME = "ctcd-streaming-scorer"
CONTAINER = "scorer"
HEALTH_PORT = 8081
SCORER = res.PREFIX + "scorer"  # label: the scorer's name (sanitized)
SCORER_CONFIG = res.PREFIX + "scorer-config"  # annotation: ScorerConfig as JSON
CONFIG_HASH = res.PREFIX + "config-hash"  # pod template annotation
RESTARTED_AT = res.PREFIX + "restarted-at"  # pod template annotation
REDIS_URL = "CTCD_SCORER_REDIS_URL"
RELOAD_TOKEN = "CTCD_SCORER_RELOAD_TOKEN"
RELOAD_TOKEN_KEY = "reload-token"  # beside the URL in the Secret


def resource_name(name: str) -> str:
    return res.resource_name(f"scorer-{name}")


def redis_secret_name(resource: str) -> str:
    return f"{resource}-redis"


def selector_labels(resource: str) -> dict[str, str]:
    return {res.APP: APP_NAME, res.INSTANCE: resource}


def labels(resource: str, config: ScorerConfig) -> dict[str, str]:
    return {**selector_labels(resource), res.MANAGED_BY: "ctcd",
            SCORER: res.label_value(config.name)}


def environment(config: ScorerConfig) -> dict[str, str]:
    """The ConfigMap's data: the scorer's settings as its environment."""
    tracking = config.tracking_uri or ""
    env = {"CTCD_SCORER_MODEL_URI": config.model_uri, "CTCD_SCORER_STREAM": config.stream,
           "CTCD_SCORER_GROUP": config.group, "CTCD_SCORER_TRACKING_URI": tracking,
           "MLFLOW_TRACKING_URI": tracking}
    env.update({f"CTCD_SCORER_{key.upper()}": value for key, value in config.options.items()})
    return env


def pod_template(resource: str, config: ScorerConfig, k8s: KubernetesSettings
                 ) -> dict[str, Any]:
    env = environment(config)
    checksum = hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]

    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "health"}, **timing}

    container = {
        "name": CONTAINER, "image": k8s.image, "imagePullPolicy": k8s.image_pull_policy,
        "command": ["python", "-m", "ctcd.streaming"],
        "env": [
            *({"name": key, "valueFrom": {"configMapKeyRef": {"name": resource, "key": key}}}
              for key in sorted(env)),
            {"name": REDIS_URL, "valueFrom": {"secretKeyRef": {
                "name": redis_secret_name(resource), "key": "url"}}},
            {"name": RELOAD_TOKEN, "valueFrom": {"secretKeyRef": {
                "name": redis_secret_name(resource), "key": RELOAD_TOKEN_KEY}}},
            {"name": "CTCD_SCORER_CONSUMER", "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "CTCD_SCORER_HEALTH_HOST", "value": "0.0.0.0"},
            {"name": "CTCD_SCORER_HEALTH_PORT", "value": str(HEALTH_PORT)},
        ],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        # Loading the model takes seconds to minutes: the startup probe holds liveness off.
        "startupProbe": probe("/readyz", periodSeconds=2, failureThreshold=150),
        "readinessProbe": probe("/readyz", periodSeconds=5, failureThreshold=2),
        "livenessProbe": probe("/healthz", periodSeconds=10, failureThreshold=3),
        "resources": {"requests": {"cpu": k8s.cpu_request, "memory": k8s.memory_request},
                      "limits": {"cpu": k8s.cpu_limit, "memory": k8s.memory_limit}},
    }
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 60}
    if k8s.service_account:
        spec["serviceAccountName"] = k8s.service_account
    return {"metadata": {"labels": selector_labels(resource),
                         "annotations": {CONFIG_HASH: checksum}}, "spec": spec}


class KubernetesScorers:
    """Streaming scorers in ``cluster``'s namespace (its API clients, settings and leases);
    ``tracking_uri`` is the MLflow server a config without one is recorded with."""

    def __init__(self, cluster: Cluster, tracking_uri: str) -> None:
        self.cluster = cluster
        self.kube, self.k8s, self.ns = cluster.kube, cluster.k8s, cluster.ns
        self.leases = cluster.leases
        self.tracking_uri = tracking_uri

    # -- queries (pure) ----------------------------------------------------------------------

    def find(self, *, name: str | None = None, model_uri: str | None = None,
             stream: str | None = None, running: bool = False) -> list[ScorerInfo]:
        selector = f"{res.APP}={APP_NAME},{res.MANAGED_BY}=ctcd"
        if name is not None and not _looks_like_uid(name):
            selector += f",{SCORER}={res.label_value(name)}"
        found = [self.describe(o) for o in self._list(selector) if _config(o).matches(
            o["metadata"]["uid"], name=name, model_uri=model_uri, stream=stream)]
        return [info for info in found if not running or info.state == "running"]

    def get(self, name: str) -> ScorerInfo:
        return self.describe(self._resolve(name))

    def describe(self, obj: dict[str, Any]) -> ScorerInfo:
        """Observed now: each pod, and what its ``/readyz`` says (model version, counters)."""
        resource, config = obj["metadata"]["name"], _config(obj)
        notes = obj["metadata"].get("annotations") or {}
        replicas = []
        for pod in self._pods(resource):
            pod_name = pod["metadata"]["name"]
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            is_ready = ready(pod)
            replicas.append(ReplicaStatus(
                consumer=pod_name, state="running" if is_ready else "starting",
                heartbeat=self._readyz(pod) if is_ready else None,
                details={"pod": pod_name, "pod_ip": (pod.get("status") or {}).get("podIP"),
                         "restarts": int(statuses[0].get("restartCount", 0))}))
        spec, status = obj.get("spec", {}), obj.get("status") or {}
        return ScorerInfo(
            id=obj["metadata"]["uid"], name=config.name, backend="kubernetes", config=config,
            desired_state="running" if spec.get("replicas", 0) > 0 else "stopped",
            replicas=tuple(replicas), last_error=notes.get(res.LAST_ERROR),
            details={"namespace": self.ns, "deployment": resource,
                     "replicas": spec.get("replicas", 0),
                     "ready_replicas": status.get("readyReplicas", 0),
                     "image": spec["template"]["spec"]["containers"][0].get("image", ""),
                     "deployed_at": notes.get(res.DEPLOYED_AT)},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def deploy(self, config: ScorerConfig, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """Create the scorer, or roll it to a changed config; unchanged: nothing happens.
        A failed rollout puts the previous config back (its pods never stopped)."""
        config = replace(config, tracking_uri=config.tracking_uri or self.tracking_uri)
        deadline = time.monotonic() + timeout
        resource = resource_name(config.name)
        with self.leases.hold(f"scorer:{config.name}", resource, timeout):
            current = self._read(resource)
            if current is None:
                return self._create(resource, config, deadline)
            if (current["metadata"].get("labels") or {}).get(res.APP) != APP_NAME:
                raise DeploymentError(
                    f"Deployment {self.ns}/{resource} exists but is not a ctcd streaming "
                    f"scorer; deploy scorer {config.name!r} under another name or remove it")
            return self._update(current, config, deadline)

    def start(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        deadline = time.monotonic() + timeout
        obj = self._resolve(name)
        resource = obj["metadata"]["name"]
        with self.leases.hold(f"scorer:{_config(obj).name}", resource, timeout):
            obj = self._resolve(obj["metadata"]["uid"])
            if obj["spec"].get("replicas", 0) == 0:
                notes = obj["metadata"].get("annotations") or {}
                self.cluster.scale(resource, int(notes.get(res.REPLICAS)
                                                 or _config(obj).replicas))
            return self._wait(resource, deadline, stop_on_failure=True)

    def stop(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        """Scale to zero (replicas remembered for ``start``) and wait for the pods to go:
        each finishes its batch on SIGTERM."""
        obj = self._resolve(name)
        with self.leases.hold(f"scorer:{_config(obj).name}", obj["metadata"]["name"],
                                timeout):
            obj = self._resolve(obj["metadata"]["uid"])
            self.cluster.stop(obj["metadata"]["name"], obj["spec"].get("replicas", 0), timeout,
                              force)

    def restart(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """A rolling restart (``kubectl rollout restart``): new pods first, then the old
        ones stop; a stopped scorer is started."""
        deadline = time.monotonic() + timeout
        obj = self._resolve(name)
        if obj["spec"].get("replicas", 0) == 0:
            return self.start(name, timeout)
        resource = obj["metadata"]["name"]
        with self.leases.hold(f"scorer:{_config(obj).name}", resource, timeout):
            self.cluster.patch_deployment(resource, {"spec": {"template": {"metadata": {
                "annotations": {RESTARTED_AT: utcnow()}}}}})
            return self._wait(resource, deadline)

    def delete(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        obj = self._resolve(name)
        resource = obj["metadata"]["name"]
        with self.leases.hold(f"scorer:{_config(obj).name}", resource, timeout):
            self.cluster.stop(resource, obj["spec"].get("replicas", 0), timeout, force)
            self.cluster.delete("Deployment", resource)
            self.cluster.delete("ConfigMap", resource)
            self.cluster.delete("Secret", redis_secret_name(resource))

    def reload(self, name: str) -> int:
        """``POST /reload`` to every ready pod: each checks its model alias now."""
        obj, asked = self._resolve(name), 0
        token = self.cluster.secret(redis_secret_name(obj["metadata"]["name"])).get(
            RELOAD_TOKEN_KEY)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for pod in self._pods(obj["metadata"]["name"]):
            if not ready(pod):
                continue
            try:
                answer = httpx.post(self._pod_url(pod) + "/reload", timeout=10, headers=headers)
            except httpx.HTTPError as err:
                log.warning("pod %s did not take the reload: %s", pod["metadata"]["name"], err)
                continue
            asked += answer.status_code == 202
        return asked

    def logs(self, name: str, *, replica: int | None = None, follow: bool = False,
             tail: int | None = None) -> Iterator[str]:
        pods = self._pods(self._resolve(name)["metadata"]["name"])
        if replica is not None:
            if not 0 <= replica < len(pods):
                raise InvalidParams(f"scorer {name!r} has {len(pods)} pod(s) now; replica "
                                    f"is 0..{len(pods) - 1}")
            pods = pods[replica:replica + 1]
        yield from self.cluster.logs(pods, CONTAINER, follow=follow, tail=tail)

    # -- internals ---------------------------------------------------------------------------

    def _create(self, resource: str, config: ScorerConfig, deadline: float) -> ScorerInfo:
        what = f"create streaming scorer {config.name!r} in namespace {self.ns!r}"
        self._write_settings(resource, config, what)
        template = pod_template(resource, config, self.k8s)
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": resource, "labels": labels(resource, config),
                         "annotations": self._annotations(config, template)},
            "spec": {
                "replicas": config.replicas,
                "selector": {"matchLabels": selector_labels(resource)},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "progressDeadlineSeconds": self.cluster.progress_deadline(deadline),
                "revisionHistoryLimit": 5, "template": template,
            },
        }
        self.cluster.create_deployment(body, what)
        return self._wait(resource, deadline, stop_on_failure=True)

    def _update(self, current: dict[str, Any], config: ScorerConfig, deadline: float
                ) -> ScorerInfo:
        resource = current["metadata"]["name"]
        previous = _config(current)
        notes = current["metadata"].get("annotations") or {}
        template = pod_template(resource, config, self.k8s)
        stopped = current["spec"].get("replicas", 0) == 0
        if (previous == config and not stopped
                and notes.get(res.TEMPLATE_HASH) == res.template_hash(template)):
            return self._wait(resource, deadline)  # unchanged: wait, never stop what runs
        what = f"update streaming scorer {config.name!r} in namespace {self.ns!r}"
        old_template = current["spec"]["template"]
        self._write_settings(resource, config, what)
        self._replace(resource, template, config, self._annotations(config, template))
        if stopped:  # nothing scores: nothing to protect, as a start
            return self._wait(resource, deadline, stop_on_failure=True)
        try:
            return self._wait(resource, deadline)
        except DeploymentError as err:
            # The old pods never stopped (maxUnavailable 0): put their settings back.
            self._write_settings(resource, previous, f"restore scorer {config.name!r}")
            self._replace(resource, old_template, previous, {
                **self._annotations(previous, None), res.LAST_ERROR: err.message[:2000],
                res.TEMPLATE_HASH: notes.get(res.TEMPLATE_HASH, "")})
            raise type(err)(f"{err.message} Scorer {config.name!r} was rolled back to its "
                            f"previous settings ({previous.model_uri}).") from err

    def _replace(self, resource: str, template: dict[str, Any], config: ScorerConfig,
                 annotations: dict[str, str]) -> None:
        """The whole pod template replaced (not merged: a dropped option must go), the
        replicas, labels and ctcd's annotations set (others' annotations kept)."""
        self.cluster.replace_template(
            resource, template, annotations, labels=labels(resource, config),
            replicas=config.replicas, what=f"update Deployment {self.ns}/{resource}")

    def _write_settings(self, resource: str, config: ScorerConfig, what: str) -> None:
        live = os.environ.get(REDIS_URL, "")
        url = live if live and redact_uri(live) == config.redis_url else config.redis_url
        kept = self.cluster.secret(redis_secret_name(resource))
        stored = kept.get("url")
        if url == config.redis_url and stored and redact_uri(stored) == config.redis_url:
            url = stored  # the same Redis: keep the password an earlier deploy stored
        # running pods read the token at start: keep the one they have
        token = kept.get(RELOAD_TOKEN_KEY) or secrets.token_urlsafe(24)
        self.cluster.apply("Secret", redis_secret_name(resource), {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": redis_secret_name(resource),
                         "labels": labels(resource, config)},
            "stringData": {"url": url, RELOAD_TOKEN_KEY: token}}, what)
        self.cluster.apply("ConfigMap", resource, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": resource, "labels": labels(resource, config)},
            "data": environment(config)}, what)
        # A patch merges data: keys of dropped options are removed explicitly.
        current = self.kube.json(f"read ConfigMap {self.ns}/{resource}",
                                 self.kube.core.read_namespaced_config_map, resource, self.ns)
        stale = set(current.get("data") or {}) - set(environment(config))
        if stale:
            self.cluster.patch_config_map(resource, dict.fromkeys(stale))

    def _annotations(self, config: ScorerConfig, template: dict[str, Any] | None
                     ) -> dict[str, str]:
        notes = {SCORER_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                 res.DEPLOYED_AT: utcnow(), res.REPLICAS: str(config.replicas)}
        if template is not None:
            notes[res.TEMPLATE_HASH] = res.template_hash(template)
        return notes

    def _wait(self, resource: str, deadline: float, *, stop_on_failure: bool = False
              ) -> ScorerInfo:
        try:
            self.cluster.wait_rollout(resource, deadline)
        except DeploymentError as err:
            if not stop_on_failure:
                raise
            self.cluster.scale(resource, 0)
            self.cluster.annotate(resource, {res.LAST_ERROR: err.message[:2000]})
            raise ServerStartFailed(
                f"streaming scorer Deployment {self.ns}/{resource} did not start, so it was "
                f"scaled to zero: {err.message}") from err
        self.cluster.annotate(resource, {res.LAST_ERROR: None})
        return self.describe(self.cluster.deployment(resource))

    def _readyz(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        try:
            answer = httpx.get(self._pod_url(pod) + "/readyz", timeout=3)
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def _pod_url(self, pod: dict[str, Any]) -> str:
        return self.cluster.pod_url(pod, HEALTH_PORT)

    def _pods(self, resource: str) -> list[dict[str, Any]]:
        return self.cluster.pods(instance(resource))

    def _list(self, selector: str) -> list[dict[str, Any]]:
        items = self.cluster.deployments(selector, "streaming scorers")
        return [d for d in items if SCORER_CONFIG in (d["metadata"].get("annotations") or {})]

    def _resolve(self, name: str) -> dict[str, Any]:
        for obj in self._list(f"{res.APP}={APP_NAME},{res.MANAGED_BY}=ctcd"):
            if name in (obj["metadata"]["uid"], obj["metadata"]["name"], _config(obj).name):
                return obj
        raise ScorerNotFound(name, f"kubernetes, namespace {self.ns}")

    def _read(self, resource: str) -> dict[str, Any] | None:
        return self.cluster.deployment_or_none(resource)


def _config(obj: dict[str, Any]) -> ScorerConfig:
    return ScorerConfig.from_dict(json.loads(obj["metadata"]["annotations"][SCORER_CONFIG]))


def _looks_like_uid(value: str) -> bool:
    return len(value) == 36 and value.count("-") == 4
