"""The cluster operations of one namespace: what model servers (:mod:`.deployer`), KServe
mode (:mod:`.kserve`) and streaming scorers (:mod:`.scorers`) each do to their objects.

Apply (create, or patch what is left over), patch a Deployment with a ``resourceVersion``
precondition, annotate, scale, delete, list pods and their readiness, wait for a rollout
(and say why it cannot finish), stop (scale to zero and wait for the pods to go), read a
Secret, read pod logs; and the per-server :class:`.lease.Leases`. Every call's failure is an
error naming the object (:class:`.api.Kube`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes.api import JSON_PATCH, STRATEGIC, Change, Kube, NotFound
from ctcd.deployers.kubernetes.errors import KubernetesError, RolloutFailed
from ctcd.deployers.kubernetes.lease import Leases
from ctcd.deployers.kubernetes.rollout import (
    deadline_exceeded,
    pod_problem,
    progress,
    rollout_done,
)
from ctcd.errors import ServerStopFailed
from ctcd.settings import KubernetesSettings


class Cluster:
    """Operations on the objects of ``kube.namespace``, with ``k8s``'s polling and pod URL."""

    def __init__(self, kube: Kube, k8s: KubernetesSettings) -> None:
        self.kube = kube
        self.k8s = k8s
        self.ns = kube.namespace
        self.leases = Leases(kube, k8s.poll_interval)

    # -- reading -----------------------------------------------------------------------------

    def deployment(self, name: str) -> dict[str, Any]:
        """The Deployment as the API server holds it; :class:`NotFound` if there is none."""
        data: dict[str, Any] = self.kube.json(
            f"read Deployment {self.ns}/{name}", self.kube.apps.read_namespaced_deployment,
            name, self.ns)
        return data

    def deployment_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self.deployment(name)
        except NotFound:
            return None

    def deployments(self, selector: str, what: str = "Deployments") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.json(
            f"list {what} in {self.ns}", self.kube.apps.list_namespaced_deployment, self.ns,
            label_selector=selector).get("items", [])
        return items

    def pods(self, selector: str, *, terminating: bool = False) -> list[dict[str, Any]]:
        """The pods matching ``selector``, oldest first: the live ones, and with
        ``terminating`` those being deleted too (they run until their grace period ends)."""
        items = self.kube.json(f"list Pods {selector} in {self.ns}",
                               self.kube.core.list_namespaced_pod, self.ns,
                               label_selector=selector).get("items", [])
        pods = [p for p in items if terminating or not p["metadata"].get("deletionTimestamp")]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def pod_url(self, pod: dict[str, Any], port: int) -> str:
        return self.k8s.pod_url.format(pod_ip=(pod.get("status") or {}).get("podIP", ""),
                                       pod=pod["metadata"]["name"], port=port)

    def ready_pods(self, selector: str, port: int) -> list[tuple[str, str]]:
        """``[(pod name, URL)]`` of the ready pods matching ``selector``."""
        return [(pod["metadata"]["name"], self.pod_url(pod, port))
                for pod in self.pods(selector) if ready(pod)]

    def secret(self, name: str) -> dict[str, str]:
        """The Secret's data, decoded; ``{}`` when there is no such Secret."""
        try:
            data = self.kube.json(f"read Secret {self.ns}/{name}",
                                  self.kube.core.read_namespaced_secret, name,
                                  self.ns).get("data") or {}
        except NotFound:
            return {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def node_port(self, service: str) -> str:
        """The first port's ``nodePort`` of a Service (``""`` if none)."""
        try:
            svc = self.kube.json(f"read Service {self.ns}/{service}",
                                 self.kube.core.read_namespaced_service, service, self.ns)
        except NotFound:
            return ""
        return str(svc["spec"]["ports"][0].get("nodePort", ""))

    def logs(self, pods: Sequence[dict[str, Any]], container: str, *, follow: bool,
             tail: int | None) -> Iterator[str]:
        """The pods' log lines, each ``[pod] ``-prefixed when there are several; following
        several would interleave them, so ``follow`` reads the newest pod only."""
        if follow:
            pods = pods[-1:]
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            prefix = f"[{pod_name}] " if len(pods) > 1 else ""
            for line in self.kube.pod_log(pod_name, container, follow=follow, tail=tail):
                yield prefix + line

    # -- writing -----------------------------------------------------------------------------

    def apply(self, kind: str, name: str, body: dict[str, Any], what: str) -> None:
        """Create ``body``; if it exists already (left over), patch it to ``body``."""
        create, patch = {
            "Secret": (self.kube.core.create_namespaced_secret,
                       self.kube.core.patch_namespaced_secret),
            "ConfigMap": (self.kube.core.create_namespaced_config_map,
                          self.kube.core.patch_namespaced_config_map),
            "Service": (self.kube.core.create_namespaced_service,
                        self.kube.core.patch_namespaced_service),
        }[kind]
        try:
            self.kube.call(f"{what}: create {kind} {self.ns}/{name}", create, self.ns, body)
        except KubernetesError as err:
            if "AlreadyExists" not in err.message and "already exists" not in err.message:
                raise
            self.kube.call(f"{what}: update {kind} {self.ns}/{name}", patch, name, self.ns,
                           body, _content_type=STRATEGIC)

    def create_deployment(self, body: dict[str, Any], what: str) -> None:
        self.kube.call(f"{what}: create Deployment {self.ns}/{body['metadata']['name']}",
                       self.kube.apps.create_namespaced_deployment, self.ns, body)

    def patch_config_map(self, name: str, data: dict[str, str | None]) -> None:
        """Set (a value) or remove (``None``) keys of a ConfigMap's data."""
        self.kube.call(f"update ConfigMap {self.ns}/{name}",
                       self.kube.core.patch_namespaced_config_map, name, self.ns,
                       {"data": data}, _content_type=STRATEGIC)

    def patch_secret(self, name: str, string_data: dict[str, str]) -> None:
        self.kube.call(f"update Secret {self.ns}/{name}",
                       self.kube.core.patch_namespaced_secret, name, self.ns,
                       {"stringData": string_data}, _content_type=STRATEGIC)

    def update_deployment(self, name: str, change: Change, what: str | None = None) -> None:
        """Read-modify-write of a Deployment with optimistic locking (:meth:`Kube.update`):
        ``change(current)`` returns a strategic merge patch, or a JSON patch's operations."""
        self.kube.update(
            what or f"patch Deployment {self.ns}/{name}", lambda: self.deployment(name), change,
            lambda body: self.kube.apps.patch_namespaced_deployment(
                name, self.ns, body, _preload_content=False,
                _content_type=JSON_PATCH if isinstance(body, list) else STRATEGIC))

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        self.update_deployment(name, lambda _current: json.loads(json.dumps(patch)))

    def annotate(self, name: str, values: dict[str, str | None]) -> None:
        """Set (or remove, ``None``) annotations of a Deployment."""
        self.patch_deployment(name, {"metadata": {"annotations": values}})

    def replace_template(
        self, name: str, template: dict[str, Any], annotations: dict[str, str], *,
        what: str, labels: dict[str, str] | None = None, replicas: int | None = None,
        progress_deadline: int | None = None,
    ) -> None:
        """Replace the Deployment's pod template whole (a JSON patch: a merge would keep an
        environment variable or a probe the new template dropped), and set ``annotations``
        and ``labels`` (others' are kept), ``replicas`` and ``progressDeadlineSeconds``."""
        def key(name: str) -> str:
            return name.replace("~", "~0").replace("/", "~1")

        ops: list[dict[str, Any]] = [
            {"op": "replace", "path": "/spec/template", "value": template},
            *({"op": "add", "path": f"/metadata/annotations/{key(k)}", "value": v}
              for k, v in annotations.items()),
            *({"op": "add", "path": f"/metadata/labels/{key(k)}", "value": v}
              for k, v in (labels or {}).items()),
        ]
        if replicas is not None:
            ops.append({"op": "replace", "path": "/spec/replicas", "value": replicas})
        if progress_deadline is not None:
            ops.append({"op": "replace", "path": "/spec/progressDeadlineSeconds",
                        "value": progress_deadline})
        self.update_deployment(name, lambda _current: [dict(op) for op in ops], what)

    def scale(self, name: str, replicas: int) -> None:
        self.kube.call(
            f"scale Deployment {self.ns}/{name} to {replicas}",
            self.kube.apps.patch_namespaced_deployment_scale, name, self.ns,
            {"spec": {"replicas": replicas}}, _content_type=STRATEGIC,
        )

    def delete(self, kind: str, name: str) -> None:
        """Delete one object (its dependents in the background); gone already is fine."""
        fn = {"Deployment": self.kube.apps.delete_namespaced_deployment,
              "Service": self.kube.core.delete_namespaced_service,
              "ConfigMap": self.kube.core.delete_namespaced_config_map,
              "Secret": self.kube.core.delete_namespaced_secret}[kind]
        with contextlib.suppress(NotFound):
            self.kube.call(f"delete {kind} {self.ns}/{name}", fn, name, self.ns,
                           propagation_policy="Background")

    # -- rollouts ----------------------------------------------------------------------------

    def progress_deadline(self, deadline: float) -> int:
        """``progressDeadlineSeconds`` for a rollout that must end by ``deadline``."""
        return max(int(deadline - time.monotonic()), 30)

    def wait_rollout(self, name: str, deadline: float) -> None:
        """Until the Deployment's pods all run its current template and are ready; a pod
        that cannot become ready by waiting (image pull, crash loop), the progress deadline
        or ``deadline`` raises a :class:`RolloutFailed` saying which."""
        seen: set[str] = set()
        what = f"Deployment {self.ns}/{name}"
        while True:
            deployment = self.deployment(name)
            pods = self.pods(instance(name))
            # the status is the controllers' latest view, which may lag the pods (scaled to
            # 0 and back, it can still count pods that are gone): the pods must agree
            wanted = (deployment.get("spec") or {}).get("replicas", 1)
            if rollout_done(deployment) and sum(map(ready, pods)) == wanted:
                return
            if reason := deadline_exceeded(deployment):
                raise RolloutFailed(f"{what} did not roll out: {reason} ({progress(deployment)})")
            for pod in pods:
                if problem := pod_problem(pod, seen):
                    raise type(problem)(f"{what}: {problem}") from None
            if time.monotonic() >= deadline:
                raise RolloutFailed(
                    f"{what} was not ready within the timeout ({progress(deployment)}); see "
                    "`ctcd models logs` and `kubectl describe pods` for why"
                )
            time.sleep(self.k8s.poll_interval)

    def stop(self, name: str, replicas: int, timeout: float, force: bool) -> None:
        """Scale the Deployment (now at ``replicas``) to zero, remembering ``replicas`` for a
        start, and wait for its pods to go; after ``timeout`` delete them at once with
        ``force``, else raise :class:`ServerStopFailed`."""
        if replicas > 0:
            self.annotate(name, {res.REPLICAS: str(replicas)})
            self.scale(name, 0)
        deadline = time.monotonic() + timeout
        while pods := self.pods(instance(name), terminating=True):
            if time.monotonic() >= deadline:
                if not force:
                    raise ServerStopFailed(
                        f"Deployment {self.ns}/{name} is scaled to 0 but pods "
                        f"{', '.join(p['metadata']['name'] for p in pods)} are still "
                        f"terminating after {timeout:.0f}s; retry with force=True (`--force`)"
                    )
                for pod in pods:
                    self.kube.call(f"delete Pod {self.ns}/{pod['metadata']['name']}",
                                   self.kube.core.delete_namespaced_pod,
                                   pod["metadata"]["name"], self.ns, grace_period_seconds=0)
                return
            time.sleep(self.k8s.poll_interval)


def instance(name: str) -> str:
    """The label selector of the pods of the Deployment ``name``."""
    return f"{res.INSTANCE}={name}"


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
