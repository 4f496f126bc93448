"""A FAKE Kubernetes API server (no cluster runs on these machines), at the HTTP level.

The real ``kubernetes`` client, configured by a kubeconfig through Airflow's real
``KubernetesHook``, talks to it over loopback. It keeps objects the way the API server does
for the calls the deployer makes: create (409 AlreadyExists), get, list with label
selectors, patch (JSON patch, merge patch and strategic merge patch chosen by Content-Type,
with a ``resourceVersion`` precondition answered by 409 Conflict), delete, the
``deployments/scale`` subresource, pod logs, discovery of KServe's API group, 404 for a
missing object or namespace, and ``resourceVersion``/``generation``/``uid`` bookkeeping.

Two controllers stand in for the cluster's:

* a Deployment controller: pods per template hash, rolling update with ``maxSurge: 1`` and
  ``maxUnavailable: 0``, status (observed generation, updated/ready/available replicas) and
  the ``Progressing`` condition with ``ProgressDeadlineExceeded``;
* a kubelet: with ``run_containers`` it runs each pod's container command for real, as a
  local process with the pod's environment (ConfigMap, Secret and downward-API references
  resolved), on its own loopback address (127.0.0.N, like a pod IP), and sets ``Ready``
  from the real readiness probe; deleting a pod SIGTERMs it (SIGKILL after the grace
  period, at once for ``gracePeriodSeconds=0``); an image listed in ``unpullable`` gets
  ``ErrImagePull`` then ``ImagePullBackOff``; a process that exits gets
  ``CrashLoopBackOff``. Without ``run_containers`` pods are ready at once (object-level
  tests).

A ``NodePort`` Service gets a real port on 127.0.0.1 that forwards to its ready pods, as
kube-proxy would. Faults are injected per test: ``forbid`` (RBAC 403) and
``concurrent_writer`` (another client changes the object just before a patch, so the
deployer's precondition gets a genuine 409).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ctcd.stack.processes import free_port

CORE = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
KIND = {"pods": "Pod", "services": "Service", "configmaps": "ConfigMap", "secrets": "Secret",
        "deployments": "Deployment", "inferenceservices": "InferenceService",
        "leases": "Lease"}
GROUP = {"deployments": "apps", "inferenceservices": "serving.kserve.io",
         "leases": "coordination.k8s.io"}
# Strategic merge patch: lists merged by key (the patchMergeKey of the API's types).
MERGE_KEYS = {"containers": "name", "env": "name", "volumes": "name", "conditions": "type",
              "volumeMounts": "mountPath", "imagePullSecrets": "name"}
PULL_FAILED = ("ErrImagePull", "ImagePullBackOff")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_error(code: int, reason: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": message, "reason": reason, "details": details,
                         "code": code}, status_code=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(patch, dict) and isinstance(target, dict):
        out = dict(target)
        for k, value in patch.items():
            if value is None:
                out.pop(k, None)
            else:
                out[k] = strategic_patch(out.get(k), value, k)
        return out
    merge_key = MERGE_KEYS.get(key or "")
    if key == "ports" and isinstance(patch, list) and patch and "port" in patch[0]:
        merge_key = "port"
    elif key == "ports":
        merge_key = "containerPort"
    if isinstance(patch, list) and isinstance(target, list) and merge_key:
        out_list = [copy.deepcopy(item) for item in target]
        for item in patch:
            match = next((i for i, t in enumerate(out_list)
                          if t.get(merge_key) == item.get(merge_key)), None)
            if match is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[match] = strategic_patch(out_list[match], item)
        return out_list
    return copy.deepcopy(patch)


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, replace, remove, test)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            value = parent[int(last)] if isinstance(parent, list) else parent[last]
            if value != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
    return doc


def matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Pod:
    """The kubelet's side of a pod: its process and its probe state."""

    name: str
    ip: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    pulls: int = 0
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class FakeCluster:
    workdir: Path
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    kserve: bool = False
    run_containers: bool = False
    unpullable: set[str] = field(default_factory=set)
    never_ready: set[str] = field(default_factory=set)  # images whose pods never get Ready
    progress_deadline: float | None = None  # seconds; overrides progressDeadlineSeconds
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: dict[str, Pod] = {}
        self.pod_port = free_port()
        self.forbidden: set[tuple[str, str]] = set()
        self.writers: dict[tuple[str, str], int] = {}
        self.proxies: dict[str, uvicorn.Server] = {}
        self.reapers: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.progress: dict[str, tuple[int, float, int]] = {}
        self.revisions: dict[str, dict[str, int]] = {}
        self._rv = itertools.count(1000)
        self._ips = itertools.count(2)
        self._names = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    # -- test controls -----------------------------------------------------------------------

    def forbid(self, verb: str, plural: str) -> None:
        """Answer ``verb`` (create, get, list, patch, delete) on ``plural`` with RBAC's 403."""
        self.forbidden.add((verb, plural))

    def concurrent_writer(self, plural: str, name: str, times: int) -> None:
        """Before each of the next ``times`` patches of that object, another client changes
        it (its resourceVersion moves on), as a concurrent ``kubectl annotate`` would."""
        self.writers[(plural, name)] = times

    def get(self, plural: str, name: str, ns: str = "default") -> dict[str, Any] | None:
        return self.objects.get((plural, ns, name))

    def items(self, plural: str, ns: str = "default") -> list[dict[str, Any]]:
        return [o for (p, n, _), o in sorted(self.objects.items()) if p == plural and n == ns]

    def sent(self, method: str, plural: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["plural"] == plural]

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCluster:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                    log_level="warning", lifespan="off")
            self._server = uvicorn.Server(config)

            async def main() -> None:
                self._tasks.append(asyncio.create_task(self._controllers()))
                ready.set()
                await self._server.serve()  # type: ignore[union-attr]
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-k8s")
        self._thread.start()
        ready.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/version", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the fake Kubernetes API did not start")

    def stop(self) -> None:
        for pod in list(self.pods.values()):
            self._kill(pod)
        for proxy in self.proxies.values():
            proxy.should_exit = True
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)
        for thread in self.reapers:
            thread.join(timeout=20)

    # -- the API -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def version(request: Request) -> Response:
            return JSONResponse({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"})

        async def discovery(request: Request) -> Response:
            if not self.kserve:
                return status_error(404, "NotFound", "the server could not find the requested "
                                    "resource")
            return JSONResponse({"kind": "APIResourceList",
                                 "groupVersion": "serving.kserve.io/v1beta1", "resources": [
                                     {"name": "inferenceservices", "namespaced": True,
                                      "kind": "InferenceService",
                                      "verbs": ["create", "get", "list", "patch", "delete"]}]})

        async def namespace(request: Request) -> Response:
            name = request.path_params["name"]
            if name not in self.namespaces:
                return status_error(404, "NotFound", f'namespaces "{name}" not found',
                                    name=name, kind="namespaces")
            return JSONResponse({"kind": "Namespace", "metadata": {"name": name}})

        return Starlette(routes=[
            Route("/version", version),
            Route("/apis/serving.kserve.io/v1beta1", discovery),
            Route("/api/v1/namespaces/{name}", namespace),
            Route("/{path:path}", self._dispatch,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    async def _dispatch(self, request: Request) -> Response:
        m = CORE.match(request.url.path)
        if not m or m["plural"] not in KIND:
            return status_error(404, "NotFound", f"no route {request.url.path}")
        plural, ns, name, sub = m["plural"], m["ns"], m["name"], m["sub"]
        body: Any = None
        raw = await request.body()
        if raw:
            body = json.loads(raw)
        verb = {"GET": "list" if name is None else "get", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[request.method]
        self.requests.append({"method": request.method, "plural": plural, "name": name,
                              "sub": sub, "content_type": request.headers.get("content-type"),
                              "body": copy.deepcopy(body),
                              "query": dict(request.query_params)})
        if plural == "inferenceservices" and not self.kserve:
            return status_error(404, "NotFound", "the server could not find the requested "
                                "resource")
        if (verb, plural) in self.forbidden:
            group = GROUP.get(plural, "")
            return status_error(
                403, "Forbidden",
                f'{plural}{"." + group if group else ""} "{name or ""}" is forbidden: User '
                f'"system:serviceaccount:airflow:airflow-worker" cannot {verb} resource '
                f'"{plural}" in API group "{group}" in the namespace "{ns}"',
                name=name or "", kind=plural, group=group)
        if verb == "list":
            items = [o for o in self.items(plural, ns)
                     if matches(o["metadata"].get("labels") or {},
                                request.query_params.get("labelSelector"))]
            return JSONResponse({"kind": KIND[plural] + "List", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": str(next(self._rv))},
                                 "items": items})
        if verb == "create":
            return self._create(plural, ns, body)
        current = self.get(plural, name, ns)
        if current is None:
            group = GROUP.get(plural, "")
            return status_error(404, "NotFound",
                                f'{plural}{"." + group if group else ""} "{name}" not found',
                                name=name, kind=plural, group=group)
        if sub == "log":
            return self._log(name, request)
        if verb == "get":
            return JSONResponse(self._scale_view(current) if sub == "scale" else current)
        if verb == "delete":
            grace = request.query_params.get("gracePeriodSeconds")
            if grace is None and isinstance(body, dict):
                grace = body.get("gracePeriodSeconds")
            self._delete(plural, ns, name, grace=None if grace is None else int(grace))
            return JSONResponse({"kind": "Status", "status": "Success"})
        return self._patch(plural, ns, name, sub, body, request.headers.get("content-type", ""))

    def _create(self, plural: str, ns: str, body: dict[str, Any]) -> Response:
        if ns not in self.namespaces:
            return status_error(404, "NotFound", f'namespaces "{ns}" not found',
                                name=ns, kind="namespaces")
        name = body["metadata"]["name"]
        if self.get(plural, name, ns) is not None:
            group = GROUP.get(plural, "")
            return status_error(409, "AlreadyExists",
                                f'{plural}{"." + group if group else ""} "{name}" already '
                                "exists", name=name, kind=plural)
        obj = copy.deepcopy(body)
        if plural == "deployments":
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in selector.items()):
                return status_error(422, "Invalid", "Deployment.apps is invalid: "
                                    "spec.template.metadata.labels: Invalid value: `selector` "
                                    "does not match template `labels`")
            obj["spec"].setdefault("progressDeadlineSeconds", 600)
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container.setdefault("terminationMessagePath", "/dev/termination-log")
        if plural == "secrets" and "stringData" in obj:
            obj.setdefault("data", {}).update({k: base64.b64encode(v.encode()).decode()
                                               for k, v in obj.pop("stringData").items()})
        if plural == "services":
            obj["spec"]["clusterIP"] = f"10.96.0.{next(self._names)}"
            if obj["spec"].get("type") == "NodePort":
                for port in obj["spec"]["ports"]:
                    port["nodePort"] = free_port()
                    self._start_proxy(name, ns, port["nodePort"])
        meta = obj["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(),
                    resourceVersion=str(next(self._rv)), generation=1)
        self.objects[(plural, ns, name)] = obj
        return JSONResponse(obj, status_code=201)

    def _patch(self, plural: str, ns: str, name: str, sub: str | None, body: Any,
               content_type: str) -> Response:
        if (plural, name) in self.writers and self.writers[(plural, name)] > 0:
            self.writers[(plural, name)] -= 1
            other = self.objects[(plural, ns, name)]
            other["metadata"].setdefault("annotations", {})["other-writer"] = str(time.time())
            other["metadata"]["resourceVersion"] = str(next(self._rv))
        current = self.objects[(plural, ns, name)]
        kind = content_type.split(";")[0].strip()
        if kind == "application/json-patch+json" and not isinstance(body, list):
            return status_error(400, "BadRequest", "json: cannot unmarshal object into Go "
                                "value of type jsonpatch.Patch")
        if kind == "application/strategic-merge-patch+json" and plural == "inferenceservices":
            return status_error(415, "UnsupportedMediaType", "the body of the request was in "
                                "an unknown format - accepted media types include: "
                                "application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml")
        target = self._scale_view(current) if sub == "scale" else current
        if isinstance(body, dict):
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                group = GROUP.get(plural, "")
                return status_error(
                    409, "Conflict", f'Operation cannot be fulfilled on {plural}'
                    f'{"." + group if group else ""} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    name=name, kind=plural)
        try:
            if kind == "application/json-patch+json":
                patched = json_patch(target, body)
            elif kind == "application/merge-patch+json":
                patched = merge_patch(target, body)
            elif kind == "application/strategic-merge-patch+json":
                patched = strategic_patch(target, body)
            else:
                return status_error(415, "UnsupportedMediaType", f"unsupported {kind}")
        except (KeyError, IndexError, ValueError) as err:
            return status_error(422, "Invalid", f"patch failed: {err}")
        if sub == "scale":
            patched = merge_patch(current, {"spec": {"replicas": patched["spec"]["replicas"]}})
        if plural == "secrets" and "stringData" in patched:  # write-only, kept as data
            patched.setdefault("data", {}).update({
                k: base64.b64encode(v.encode()).decode()
                for k, v in patched.pop("stringData").items()})
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        for key in ("uid", "creationTimestamp", "namespace", "name"):
            patched["metadata"][key] = current["metadata"][key]
        if patched.get("spec") != current.get("spec"):
            patched["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.objects[(plural, ns, name)] = patched
        return JSONResponse(self._scale_view(patched) if sub == "scale" else patched)

    def _scale_view(self, deployment: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": dict(deployment["metadata"]),
                "spec": {"replicas": deployment["spec"].get("replicas", 1)},
                "status": {"replicas": (deployment.get("status") or {}).get("replicas", 0)}}

    def _delete(self, plural: str, ns: str, name: str, grace: int | None = None) -> None:
        obj = self.objects.pop((plural, ns, name))
        if plural == "pods":
            self._kill(self.pods.pop(name, None), grace)
        if plural == "deployments":  # the garbage collector removes its pods
            for pod in self.items("pods", ns):
                if pod["metadata"]["labels"].get("fake/deployment") == name:
                    self._delete("pods", ns, pod["metadata"]["name"])
        if plural == "services" and name in self.proxies:
            self.proxies.pop(name).should_exit = True
        del obj

    def _log(self, name: str, request: Request) -> Response:
        pod = self.pods.get(name)
        if pod is None or pod.log is None or not pod.log.exists():
            return PlainTextResponse("")
        tail = request.query_params.get("tailLines")
        lines = pod.log.read_text(errors="replace").splitlines(keepends=True)
        if tail is not None:
            lines = lines[-int(tail):]
        if request.query_params.get("follow") != "true":
            return PlainTextResponse("".join(lines))

        async def follow() -> Any:
            yield "".join(lines).encode()
            assert pod.log is not None
            with pod.log.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                while pod.process is not None and pod.process.poll() is None:
                    chunk = fh.read()
                    if chunk:
                        yield chunk
                    await asyncio.sleep(0.1)
                yield fh.read()

        return StreamingResponse(follow(), media_type="text/plain")

    # -- controllers -------------------------------------------------------------------------

    async def _controllers(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as probe:
            while True:
                for (plural, ns, name) in list(self.objects):
                    if plural == "deployments" and (plural, ns, name) in self.objects:
                        self._reconcile(ns, name)
                for (plural, ns, name) in list(self.objects):
                    if plural == "inferenceservices" and (plural, ns, name) in self.objects:
                        self._reconcile_isvc(ns, name)
                for (plural, ns, name) in list(self.objects):
                    if plural == "pods" and (plural, ns, name) in self.objects:
                        await self._kubelet(ns, name, probe)
                await asyncio.sleep(0.1)

    def _reconcile(self, ns: str, name: str) -> None:
        deployment = self.objects[("deployments", ns, name)]
        spec = deployment["spec"]
        desired = spec.get("replicas", 1)
        current_hash = template_hash(spec["template"])
        pods = [p for p in self.items("pods", ns)
                if p["metadata"]["labels"].get("fake/deployment") == name]
        new = [p for p in pods if p["metadata"]["labels"]["pod-template-hash"] == current_hash]
        old = [p for p in pods if p not in new]
        ready = [p for p in pods if _ready(p)]
        if len(new) < desired and len(pods) < desired + 1:
            self._new_pod(ns, name, spec["template"], current_hash)
        elif old and (len(ready) > desired or desired == 0 or not _ready(old[0])):
            victim = next((p for p in old if not _ready(p)), old[0])
            self._delete("pods", ns, victim["metadata"]["name"])
        elif len(new) > desired:
            victim = next((p for p in new if not _ready(p)), new[-1])
            self._delete("pods", ns, victim["metadata"]["name"])
        pods = [p for p in self.items("pods", ns)
                if p["metadata"]["labels"].get("fake/deployment") == name]
        new_ready = [p for p in pods if _ready(p)
                     and p["metadata"]["labels"]["pod-template-hash"] == current_hash]
        generation = deployment["metadata"]["generation"]
        last_gen, since, last_ready = self.progress.get(name, (0, time.monotonic(), -1))
        if generation != last_gen or len(new_ready) != last_ready:
            since = time.monotonic()
        self.progress[name] = (generation, since, len(new_ready))
        done = (len(new_ready) == desired and len(pods) == desired)
        if done:
            progressing = {"type": "Progressing", "status": "True",
                           "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{name}-{current_hash}" has successfully '
                                      "progressed."}
        elif time.monotonic() - since > (self.progress_deadline
                                         or spec.get("progressDeadlineSeconds", 600)):
            progressing = {"type": "Progressing", "status": "False",
                           "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{name}-{current_hash}" has timed out '
                                      "progressing."}
        else:
            progressing = {"type": "Progressing", "status": "True",
                           "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{name}-{current_hash}" is progressing.'}
        ready_count = len([p for p in pods if _ready(p)])
        deployment["status"] = {
            "observedGeneration": generation, "replicas": len(pods),
            "updatedReplicas": len([p for p in pods
                                    if p["metadata"]["labels"]["pod-template-hash"]
                                    == current_hash]),
            "readyReplicas": ready_count, "availableReplicas": ready_count,
            "conditions": [{"type": "Available",
                            "status": "True" if ready_count >= desired else "False"},
                           progressing],
        }

    def _reconcile_isvc(self, ns: str, name: str) -> None:
        """KServe (serverless) in brief: each spec generation is a predictor revision; a
        revision whose image cannot be pulled fails; ``canaryTrafficPercent`` splits traffic
        between the last rolled-out revision and the newest one."""
        isvc = self.objects[("inferenceservices", ns, name)]
        predictor = isvc["spec"]["predictor"]
        status = isvc.setdefault("status", {})
        component = status.setdefault("components", {}).setdefault("predictor", {})
        template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        revisions = self.revisions.setdefault(name, {})
        key = json.dumps(template, sort_keys=True)  # the traffic split is not a revision
        revisions.setdefault(key, len(revisions) + 1)
        latest = f"{name}-predictor-{revisions[key]:05d}"
        component["latestCreatedRevision"] = latest
        if predictor["containers"][0]["image"] in self.unpullable:
            status["conditions"] = [{"type": "Ready", "status": "False",
                                     "reason": "RevisionFailed",
                                     "message": f'Revision "{latest}" failed with message: '
                                                "Back-off pulling image."}]
            return
        component["latestReadyRevision"] = latest
        rolled = component.get("latestRolledoutRevision")
        percent = predictor.get("canaryTrafficPercent")
        if percent is not None and rolled and rolled != latest:
            component["traffic"] = [
                {"revisionName": rolled, "percent": 100 - percent, "latestRevision": False},
                {"revisionName": latest, "percent": percent, "latestRevision": True}]
        else:
            component["latestRolledoutRevision"] = latest
            component["traffic"] = [{"revisionName": latest, "percent": 100,
                                     "latestRevision": True}]
        status["address"] = {"url": f"http://{name}.{ns}.svc.cluster.local"}
        status["url"] = f"http://{name}.{ns}.example.com"
        status["conditions"] = [{"type": "Ready", "status": "True"}]

    def _new_pod(self, ns: str, deployment: str, template: dict[str, Any], h: str) -> None:
        name = f"{deployment}-{h}-{next(self._names):05d}"
        ip = f"127.0.0.{next(self._ips)}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()),
                         "creationTimestamp": now(), "resourceVersion": str(next(self._rv)),
                         "labels": {**template["metadata"]["labels"], "pod-template-hash": h,
                                    "fake/deployment": deployment}},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": False,
                                       "restartCount": 0, "state": {"waiting": {
                                           "reason": "ContainerCreating"}}}
                                      for c in template["spec"]["containers"]]},
        }
        self.objects[("pods", ns, name)] = pod
        self.pods[name] = Pod(name, ip, log=self.workdir / "pods" / f"{name}.log")

    async def _kubelet(self, ns: str, name: str, probe: httpx.AsyncClient) -> None:
        obj = self.objects[("pods", ns, name)]
        pod = self.pods[name]
        container = obj["spec"]["containers"][0]
        status = obj["status"]["containerStatuses"][0]
        if container["image"] in self.unpullable:
            pod.pulls += 1
            status["state"] = {"waiting": {
                "reason": PULL_FAILED[min(pod.pulls, 2) - 1],
                "message": f'Back-off pulling image "{container["image"]}"' if pod.pulls > 1
                else f'failed to pull image "{container["image"]}": not found'}}
            return
        if not self.run_containers or container["image"] in self.never_ready:
            ok = container["image"] not in self.never_ready
            obj["status"].update(phase="Running", conditions=[{
                "type": "Ready", "status": "True" if ok else "False"}])
            status.update(ready=ok, state={"running": {"startedAt": now()}})
            return
        if pod.process is None or pod.process.poll() is not None:
            if pod.process is not None:  # it exited: crash loop with a back-off
                pod.process = None
                pod.restarts += 1
                pod.next_start = time.monotonic() + 2.0
                status.update(ready=False, restartCount=pod.restarts, state={"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off restarting failed container"}})
                obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
            if time.monotonic() < pod.next_start:
                return
            pod.process = self._run(ns, obj, pod)
            status["state"] = {"running": {"startedAt": now()}}
            obj["status"]["phase"] = "Running"
            return
        probe_path = container["readinessProbe"]["httpGet"]["path"]
        try:
            ok = (await probe.get(f"http://{pod.ip}:{self.pod_port}{probe_path}")).is_success
        except httpx.TransportError:
            ok = False
        status["ready"] = ok
        obj["status"]["conditions"] = [{"type": "Ready", "status": "True" if ok else "False"}]

    def _run(self, ns: str, obj: dict[str, Any], pod: Pod) -> subprocess.Popen[bytes]:
        container = obj["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTCD_SERVER_")}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]
            if "fieldRef" in ref:  # the downward API
                env[item["name"]] = _field(obj, ref["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in ref:
                cm = self.get("configmaps", ref["configMapKeyRef"]["name"], ns) or {}
                env[item["name"]] = cm.get("data", {})[ref["configMapKeyRef"]["key"]]
            else:
                secret = self.get("secrets", ref["secretKeyRef"]["name"], ns) or {}
                value = secret.get("data", {})[ref["secretKeyRef"]["key"]]
                env[item["name"]] = base64.b64decode(value).decode()
        # The pod's network: its own address; the container port is the fake's pod port.
        env["CTCD_SERVER_HOST"] = env["CTCD_SCORER_HEALTH_HOST"] = pod.ip
        env["CTCD_SERVER_PORT"] = env["CTCD_SCORER_HEALTH_PORT"] = str(self.pod_port)
        command = [sys.executable if c == "python" else c
                   for c in [*container.get("command", []), *container.get("args", [])]]
        assert pod.log is not None
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        with pod.log.open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def _kill(self, pod: Pod | None, grace: int | None = None) -> None:
        """SIGTERM the pod's process group, SIGKILL after the grace period (default 15 s,
        waited for off the loop); ``grace=0`` (a forced delete) SIGKILLs at once."""
        if pod is None or pod.process is None or pod.process.poll() is not None:
            return
        process = pod.process

        def reap() -> None:
            try:
                if grace == 0:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
                    return
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15 if grace is None else grace)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

        thread = threading.Thread(target=reap, daemon=True)
        thread.start()
        self.reapers.append(thread)

    # -- kube-proxy for NodePort Services ----------------------------------------------------

    def _start_proxy(self, service: str, ns: str, port: int) -> None:
        rr = itertools.count()

        async def forward(request: Request) -> Response:
            svc = self.get("services", service, ns)
            selector = (svc or {}).get("spec", {}).get("selector", {})
            backends = [self.pods[p["metadata"]["name"]] for p in self.items("pods", ns)
                        if _ready(p) and all(p["metadata"]["labels"].get(k) == v
                                             for k, v in selector.items())]
            if not backends:
                return PlainTextResponse("no ready endpoints", status_code=503)
            target = backends[next(rr) % len(backends)]
            url = f"http://{target.ip}:{self.pod_port}{request.url.path}"
            async with httpx.AsyncClient(timeout=30) as client:
                try:
                    answer = await client.request(
                        request.method, url, params=request.query_params,
                        content=await request.body(),
                        headers={k: v for k, v in request.headers.items() if k != "host"})
                except httpx.TransportError as err:  # a real proxy resets the connection
                    return PlainTextResponse(f"upstream: {err}", status_code=502)
            headers = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("content-length", "content-encoding",
                                            "transfer-encoding")}
            return Response(answer.content, status_code=answer.status_code, headers=headers)

        app = Starlette(routes=[Route("/{path:path}", forward,
                                      methods=["GET", "POST", "PUT", "DELETE"])])
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        self.proxies[service] = server
        assert self._loop is not None
        self._tasks.append(self._loop.create_task(server.serve()))


def _field(obj: dict[str, Any], path: str) -> str:
    """A downward-API ``fieldPath`` (``metadata.name``, ``status.podIP``) of a pod."""
    value: Any = obj
    for part in path.split("."):
        value = value[part]
    return str(value)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
