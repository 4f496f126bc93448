"""One operation at a time per model server, across processes: a ``coordination.k8s.io``
``Lease`` named ``<server>-lock`` (what the local backend's file lock is on one machine).

Two Airflow tasks deploying the same model at once would otherwise interleave admin calls
on the same pods. The lease lasts as long as the operation may (its timeout plus a minute),
so a holder that died frees it by itself; a live holder is waited for until the timeout.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from ctcd.deployers.kubernetes.api import STRATEGIC, Kube, NotFound
from ctcd.deployers.kubernetes.errors import ConcurrentModification
from ctcd.errors import DeploymentError

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class Leases:
    """The leases one deployer holds; re-entrant (a deploy that starts a server holds the
    server's lease once)."""

    def __init__(self, kube: Kube, poll_interval: float) -> None:
        self.kube = kube
        self.poll_interval = poll_interval
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, server: str, name: str, timeout: float) -> Iterator[None]:
        lease = f"{name}-lock"
        if self._held.get(lease):
            self._held[lease] += 1
            try:
                yield
            finally:
                self._held[lease] -= 1
            return
        self._acquire(server, lease, timeout)
        self._held[lease] = 1
        try:
            yield
        finally:
            self._held.pop(lease, None)
            self._release(lease)

    def _acquire(self, server: str, lease: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        duration = int(timeout) + 60
        api, ns = self.kube.coordination, self.kube.namespace
        what = f"Lease {ns}/{lease}"
        while True:
            now = datetime.now(UTC)
            spec = {"holderIdentity": self.holder, "leaseDurationSeconds": duration,
                    "acquireTime": now.strftime(FORMAT), "renewTime": now.strftime(FORMAT)}
            try:
                self.kube.call(f"create {what}", api.create_namespaced_lease, ns,
                               {"metadata": {"name": lease, "labels": {
                                   "app.kubernetes.io/managed-by": "ctcd"}}, "spec": spec})
                return
            except ConcurrentModification:
                pass  # held, or just released: look at it
            try:
                current = self.kube.json(f"read {what}", api.read_namespaced_lease, lease, ns)
            except NotFound:
                continue
            held = current.get("spec") or {}
            if _expired(held, now):
                try:
                    self.kube.call(f"take over {what}", api.patch_namespaced_lease, lease, ns,
                                   {"metadata": {"resourceVersion":
                                                 current["metadata"]["resourceVersion"]},
                                    "spec": spec}, _content_type=STRATEGIC)
                    return
                except ConcurrentModification:
                    continue
            if time.monotonic() >= deadline:
                raise DeploymentError(
                    f"another operation on model server {server!r} holds {what} (holder "
                    f"{held.get('holderIdentity')}, since {held.get('acquireTime')}) for "
                    f"longer than {timeout:.0f}s; try again when it has finished"
                )
            time.sleep(self.poll_interval)

    def _release(self, lease: str) -> None:
        api, ns = self.kube.coordination, self.kube.namespace
        try:
            current = self.kube.json(f"read Lease {ns}/{lease}", api.read_namespaced_lease,
                                     lease, ns)
            if (current.get("spec") or {}).get("holderIdentity") == self.holder:
                self.kube.call(f"delete Lease {ns}/{lease}", api.delete_namespaced_lease,
                               lease, ns)
        except NotFound:
            pass


def _expired(spec: dict[str, Any], now: datetime) -> bool:
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return True
    try:
        at = datetime.strptime(renewed, FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return True
    return now > at + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
