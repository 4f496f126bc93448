"""The Kubernetes API as the deployer uses it: clients from ``KubernetesHook``, every call's
failure turned into an error that names the resource and the cause, and writes retried on a
``resourceVersion`` conflict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ctcd.deployers.kubernetes.errors import (
    ConcurrentModification,
    Forbidden,
    KubernetesError,
    NamespaceNotFound,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Patch = dict[str, Any] | list[dict[str, Any]]
Change = Callable[[dict[str, Any]], Patch | None]  # the patch to make to the current object
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class NotFound(Exception):
    """Internal: the object asked for does not exist (callers decide what that means)."""


class Kube:
    """API clients of one namespace, made by ``KubernetesHook`` (connection ``conn_id``)."""

    def __init__(self, conn_id: str, namespace: str, *, conflict_retries: int = 5) -> None:
        self.conn_id = conn_id
        self.namespace = namespace
        self.conflict_retries = conflict_retries

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.conn_id)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return self.hook.core_v1_client

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(api_client=self.hook.api_client)

    @cached_property
    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(api_client=self.hook.api_client)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(api_client=self.hook.api_client)

    def json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` called for the API server's JSON as plain data (no client model objects,
        so what is read is exactly what the server holds)."""
        response = self.call(what, fn, *args, _preload_content=False, **kwargs)
        data = response.data
        return json.loads(data) if data else {}

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``; failures become errors naming ``what`` (e.g.
        ``"create Deployment ns/ctcd-churn"``). A missing object raises :class:`NotFound`."""
        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            raise self._translate(what, err) from err
        except (HTTPError, OSError) as err:
            raise KubernetesError(
                f"{what}: the Kubernetes API did not answer ({err}); check the "
                f"{self.conn_id!r} connection (kubeconfig, context or in-cluster config)"
            ) from err

    def _translate(self, what: str, err: ApiException) -> Exception:
        body = _status_body(err)
        message = body.get("message") or err.reason or ""
        details = body.get("details") or {}
        if err.status == 404:
            if details.get("kind") == "namespaces":
                return NamespaceNotFound(self.namespace, what)
            return NotFound(message)
        if err.status == 403:
            return Forbidden(what, message, self.namespace)
        if err.status == 409:
            return ConcurrentModification(f"{what}: conflict ({message})")
        return KubernetesError(f"{what}: the API server answered {err.status} ({message})")

    def pod_log(self, pod: str, container: str, *, follow: bool = False,
                tail: int | None = None) -> Iterator[str]:
        """Lines of one container's log (without line ends); nothing if the pod is gone.
        With ``follow``, until the container stops."""
        kwargs: dict[str, Any] = {"container": container, "follow": follow}
        if tail is not None:
            kwargs["tail_lines"] = tail
        try:
            response = self.call(f"read the log of Pod {self.namespace}/{pod}",
                                 self.core.read_namespaced_pod_log, pod, self.namespace,
                                 _preload_content=False, **kwargs)
        except NotFound:
            return
        pending = b""
        for chunk in response.stream(4096):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    def update(
        self, what: str, read: Callable[[], dict[str, Any]], change: Change,
        write: Callable[[Patch], Any],
    ) -> dict[str, Any] | None:
        """Read-modify-write with optimistic locking: ``change(current)`` returns the patch
        (a merge patch, or a JSON patch's list of operations; ``None``: nothing to do), sent
        with the ``resourceVersion`` it was computed from, so a concurrent writer's change
        is never overwritten. A 409 re-reads and retries up to ``conflict_retries`` times,
        then fails naming the resource."""
        last: ConcurrentModification | None = None
        for attempt in range(self.conflict_retries + 1):
            current = read()
            patch = change(current)
            if patch is None:
                return current
            version = current["metadata"]["resourceVersion"]
            if isinstance(patch, list):
                patch.append({"op": "replace", "path": "/metadata/resourceVersion",
                              "value": version})
            else:
                patch.setdefault("metadata", {})["resourceVersion"] = version
            try:
                response = self.call(what, write, patch)
                result: dict[str, Any] = json.loads(response.data)
                return result
            except ConcurrentModification as err:
                last = err
                log.info("%s: conflict (attempt %d), reading it again", what, attempt + 1)
        raise ConcurrentModification(
            f"{what}: another client kept changing it ({self.conflict_retries + 1} attempts "
            f"refused with 409 Conflict on resourceVersion). Nothing was changed by this "
            f"deployment; try again when the other writer (kubectl, a controller, a second "
            f"deploy of this model) has finished. Last answer: {last.message if last else ''}"
        )


def _status_body(err: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(err.body) if err.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
