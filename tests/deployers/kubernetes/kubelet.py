"""A TEST kubelet (and kube-proxy) for the real control plane of :mod:`.control_plane`:
there is no container runtime on these machines, so this helper plays the one node.

* It registers a ``Node`` and binds every pending pod to it (there is no scheduler).
* Per pod it reports status through the API server's ``pods/status``, as a kubelet does:
  ``podIP`` (a loopback address of its own, 127.0.0.N), conditions, container states.
  In a namespace where it runs containers (:meth:`Kubelet.run_containers`), each pod's
  container command is run for real as a local process (``python -m ctcd.serving`` or
  ``ctcd.streaming``) with the pod's environment (ConfigMap, Secret and downward-API
  references read from the API server), on the pod's address and :attr:`Kubelet.pod_port`,
  and ``Ready`` comes from the container's real readiness probe; a process that exits is
  restarted with a back-off (``CrashLoopBackOff``). Elsewhere pods are ready at once.
* Deletion as a kubelet does it: a pod being deleted gets SIGTERM, SIGKILL after its grace
  period, then the final delete; a pod force-deleted is SIGKILLed.
* Pod logs are served over HTTPS to the API server's log proxy, and ``NodePort``
  Services forwarded to their ready pods (kube-proxy's part): :mod:`.node_network`.
* What only a container runtime decides is set by the test: images in :attr:`unpullable`
  get ``ErrImagePull`` then ``ImagePullBackOff``; pods of images in :attr:`never_ready`
  run but never become ready.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.deployers.kubernetes.control_plane import ControlPlane
from tests.deployers.kubernetes.node_network import NodeNetwork

from ctcd import reaper
from ctcd.stack.processes import free_port

NODE = "ctcd-test-node"
PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")
MERGE = {"Content-Type": "application/merge-patch+json"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    """The kubelet's side of one pod: its address, process and probe state."""

    namespace: str
    name: str
    uid: str
    ip: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    pulls: int = 0
    ready: bool = False
    ready_since: str = field(default_factory=now)
    started: str = field(default_factory=now)
    terminating: float | None = None  # when SIGTERM was sent
    sent: dict[str, Any] | None = None  # the last status reported


class Kubelet:
    """The one node of ``plane``; see the module docstring."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.pods: dict[str, Pod] = {}  # by pod name
        self.plane = plane
        self.workdir = workdir
        self.pod_port = free_port()
        self.network = NodeNetwork(plane.certs, self.pod_port, self.pods)
        self.port = self.network.port  # the kubelet's HTTPS port (logs)
        self.unpullable: set[str] = set()
        self.never_ready: set[str] = set()
        self._containers: set[str] = set()  # namespaces whose pods run for real
        self._ips = itertools.count(0)
        self._stop = threading.Event()
        self._errors: list[str] = []

    def run_containers(self, namespace: str) -> None:
        """Run the pods of ``namespace`` as real processes (default: ready at once)."""
        self._containers.add(namespace)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self.api = self.plane.client()
        self._register()
        self.network.start()
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-kubelet")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for pod in list(self.pods.values()):
            self._kill(pod, signal.SIGKILL)
        for pod in list(self.pods.values()):
            if pod.process is not None:
                pod.process.wait(timeout=10)
        self.network.stop()
        self.api.close()

    def _register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}
        created = self.api.post("/api/v1/nodes", json=node)
        assert created.status_code in (201, 409), created.text
        resources = {"cpu": "2", "memory": "24Gi", "pods": "110"}
        status = self.api.patch(f"/api/v1/nodes/{NODE}/status", headers=MERGE, json={
            "status": {
                "capacity": resources, "allocatable": resources,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": NODE}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "the test kubelet is ready",
                                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
                "nodeInfo": {"kubeletVersion": "v1.20.2-test", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "none://",
                             "machineID": "", "systemUUID": "", "bootID": "",
                             "kernelVersion": "", "osImage": "", "kubeProxyVersion": ""}}})
        assert status.status_code == 200, status.text

    # -- the pod loop ------------------------------------------------------------------------

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as probe:
            while not self._stop.is_set():
                try:
                    self._tick(probe)
                except httpx.HTTPError as err:  # the API server restarting, a slow answer
                    self._errors.append(repr(err))
                self._stop.wait(0.1)

    def _tick(self, probe: httpx.Client) -> None:
        listed = self.api.get("/api/v1/pods").json()["items"]
        seen = set()
        for obj in listed:
            meta, spec = obj["metadata"], obj["spec"]
            if not spec.get("nodeName"):
                self._bind(meta["namespace"], meta["name"])
                continue
            if spec["nodeName"] != NODE:
                continue
            seen.add(meta["name"])
            pod = self.pods.get(meta["name"])
            if pod is None or pod.uid != meta["uid"]:
                if pod is not None:
                    self._kill(pod, signal.SIGKILL)
                pod = self.pods[meta["name"]] = self._new_pod(obj)
            if meta.get("deletionTimestamp"):
                self._terminate(pod, obj)
            else:
                self._sync(pod, obj, probe)
        for name in set(self.pods) - seen:  # force-deleted: gone from the API at once
            self._kill(self.pods.pop(name), signal.SIGKILL)
        self.network.sync(self.api.get("/api/v1/services").json()["items"], listed)

    def _bind(self, namespace: str, name: str) -> None:
        self.api.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", json={
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}})

    def _new_pod(self, obj: dict[str, Any]) -> Pod:
        n = next(self._ips)
        meta = obj["metadata"]
        return Pod(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                   ip=f"127.0.{1 + n // 250}.{2 + n % 250}",
                   log=self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}.log")

    def _sync(self, pod: Pod, obj: dict[str, Any], probe: httpx.Client) -> None:
        container = obj["spec"]["containers"][0]
        image = container["image"]
        state: dict[str, Any]
        running = False
        if image in self.unpullable:
            pod.pulls += 1
            reason = PULL_FAILED[min(pod.pulls, 2) - 1]
            state = {"waiting": {"reason": reason, "message": (
                f'Back-off pulling image "{image}"' if pod.pulls > 1
                else f'failed to pull image "{image}": not found')}}
            ready = False
        elif pod.namespace not in self._containers:
            state, ready, running = {"running": {"startedAt": pod.started}}, (
                image not in self.never_ready), True
        else:
            state, ready, running = self._container(pod, obj, container, probe)
        if ready != pod.ready:
            pod.ready, pod.ready_since = ready, now()
        flag = "True" if ready else "False"
        status = {
            "phase": "Running" if running else "Pending", "hostIP": "127.0.0.1",
            "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "startTime": pod.started,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": pod.started},
                {"type": "Ready", "status": flag, "lastTransitionTime": pod.ready_since},
                {"type": "ContainersReady", "status": flag,
                 "lastTransitionTime": pod.ready_since},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": pod.started}],
            "containerStatuses": [{
                "name": container["name"], "image": image, "imageID": "", "ready": ready,
                "restartCount": pod.restarts, "started": running, "state": state}],
        }
        if status != pod.sent:
            answer = self.api.patch(
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status", headers=MERGE,
                json={"status": status})
            if answer.status_code == 200:
                pod.sent = status
            elif answer.status_code != 404:
                self._errors.append(f"pod {pod.name} status: {answer.status_code} {answer.text}")

    def _container(self, pod: Pod, obj: dict[str, Any], container: dict[str, Any],
                   probe: httpx.Client) -> tuple[dict[str, Any], bool, bool]:
        """Run the container's process (again, after a back-off, if it exited); its state,
        readiness (its real readiness probe) and whether it runs."""
        if pod.process is not None and pod.process.poll() is not None:
            pod.process = None
            pod.restarts += 1
            pod.next_start = time.monotonic() + 2.0
        if pod.process is None:
            if time.monotonic() < pod.next_start:
                return ({"waiting": {"reason": "CrashLoopBackOff",
                                     "message": "back-off restarting failed container"}},
                        False, False)
            try:
                pod.process = self._start_process(pod, obj, container)
            except LookupError as err:
                return ({"waiting": {"reason": "CreateContainerConfigError",
                                     "message": str(err)}}, False, False)
            pod.started = now()
        state = {"running": {"startedAt": pod.started}}
        if container["image"] in self.never_ready:
            return state, False, True
        path = container.get("readinessProbe", {}).get("httpGet", {}).get("path", "/")
        try:
            ok = probe.get(f"http://{pod.ip}:{self.pod_port}{path}").is_success
        except httpx.TransportError:
            ok = False
        return state, ok, True

    def _start_process(self, pod: Pod, obj: dict[str, Any], container: dict[str, Any]
                       ) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTCD_SERVER_")}
        for item in container.get("env", []):
            env[item["name"]] = self._env_value(pod.namespace, obj, item)
        # The pod's network: its own address; every container port is the kubelet's pod port.
        env["CTCD_SERVER_HOST"] = env["CTCD_SCORER_HEALTH_HOST"] = pod.ip
        env["CTCD_SERVER_PORT"] = env["CTCD_SCORER_HEALTH_PORT"] = str(self.pod_port)
        command = [sys.executable if c == "python" else c
                   for c in [*container.get("command", []), *container.get("args", [])]]
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        with pod.log.open("ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        reaper.watch(proc.pid)  # stopped with the session, even a killed one
        return proc

    def _env_value(self, namespace: str, obj: dict[str, Any], item: dict[str, Any]) -> str:
        if "value" in item:
            return str(item["value"])
        ref = item["valueFrom"]
        if "fieldRef" in ref:  # the downward API
            value: Any = obj
            for part in ref["fieldRef"]["fieldPath"].split("."):
                value = value[part]
            return str(value)
        kind, key_ref = (("configmaps", ref["configMapKeyRef"]) if "configMapKeyRef" in ref
                         else ("secrets", ref["secretKeyRef"]))
        found = self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{key_ref['name']}")
        data = found.json().get("data") or {} if found.status_code == 200 else {}
        if key_ref["key"] not in data:
            raise LookupError(f"{kind} {key_ref['name']!r} has no key {key_ref['key']!r}")
        value = data[key_ref["key"]]
        return base64.b64decode(value).decode() if kind == "secrets" else str(value)

    def _terminate(self, pod: Pod, obj: dict[str, Any]) -> None:
        """A graceful delete: SIGTERM, SIGKILL after the grace period, then the kubelet's
        final delete of the pod object."""
        grace = int(obj["metadata"].get("deletionGracePeriodSeconds") or 0)
        if pod.terminating is None:
            pod.terminating = time.monotonic()
            self._kill(pod, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        elif time.monotonic() - pod.terminating > grace:
            self._kill(pod, signal.SIGKILL)
        if pod.process is not None and pod.process.poll() is None:
            return
        self.api.request(
            "DELETE", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
            json={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                  "preconditions": {"uid": pod.uid}})

    def _kill(self, pod: Pod, sig: signal.Signals) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
