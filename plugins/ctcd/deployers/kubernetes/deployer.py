"""The ``kubernetes`` model deployer: model servers as Deployments (or KServe
InferenceServices) in one namespace, driven through Airflow's ``KubernetesHook``.

* One server per ``DeploymentConfig.server_name``: ``ConfigMap`` + ``Secret`` +
  ``Deployment`` + ``Service`` named ``ctcd-<server>`` (see :mod:`.resources`).
* A new model version is loaded into the running pods by the strategy (replace, blue/green,
  canary, :mod:`ctcd.deployers.strategies` unchanged) through every pod's admin API
  (:class:`.pods.PodsAdmin`), then written to the ConfigMap, so pods started later start with
  it. No pod restarts for a new version; the Deployment's annotations record it.
* A change of the pod template (image, resources, workers) is a rolling update
  (``maxUnavailable: 0``); when it fails (image pull, crash loop, progress deadline,
  timeout) the previous template is restored and the old pods never stopped serving.
* The cluster is the registry: handles are rebuilt from labels and annotations; the
  service id is the Deployment's (or InferenceService's) ``metadata.uid``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ctcd.deployers import options
from ctcd.deployers.admin import VersionStats
from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    DeploymentConfig,
    DeploymentEvent,
    ServerDescription,
    redact_uri,
)
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes.api import JSON_PATCH, STRATEGIC, Kube, NotFound
from ctcd.deployers.kubernetes.errors import KubernetesError, RolloutFailed
from ctcd.deployers.kubernetes.kserve import KServe
from ctcd.deployers.kubernetes.lease import Leases
from ctcd.deployers.kubernetes.pods import PodsAdmin
from ctcd.deployers.kubernetes.rollout import (
    deadline_exceeded,
    pod_problem,
    progress,
    rollout_done,
)
from ctcd.deployers.kubernetes.scorers import ScorerMethods
from ctcd.deployers.strategies import Rollout, Strategy, StrategySpec, resolve_strategy
from ctcd.errors import (
    CtcdError,
    DeploymentError,
    InvalidParams,
    ModelServerNotFound,
    ServerStartFailed,
    ServerStopFailed,
)
from ctcd.services.handle import ServiceHandle, ServiceStatus, probe
from ctcd.settings import Settings, get_settings

log = logging.getLogger(__name__)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Server:
    """One model server as the cluster describes it (a Deployment or an InferenceService)."""

    kind: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"]["uid"])

    @property
    def annotations(self) -> dict[str, str]:
        return self.obj["metadata"].get("annotations") or {}

    @property
    def config(self) -> DeploymentConfig:
        return DeploymentConfig.from_dict(json.loads(self.annotations[res.CONFIG]))

    @property
    def replicas(self) -> int:
        if self.kind == "InferenceService":
            return 0 if self.annotations.get(KServe.STOP) == "true" else 1
        return int(self.obj.get("spec", {}).get("replicas", 1))

    def history(self) -> list[dict[str, Any]]:
        return list(json.loads(self.annotations.get(res.HISTORY, "[]")))


class KubernetesDeployer(ScorerMethods):
    """Model servers in a Kubernetes namespace (``CTCD_K8S_*`` settings); streaming scorers
    too (:mod:`.scorers`)."""

    name = "kubernetes"

    def __init__(self, settings: Settings | None = None, *, kube: Kube | None = None) -> None:
        self.settings = settings or get_settings()
        self.k8s = self.settings.kubernetes
        self.ns = self.k8s.namespace
        self.kube = kube or Kube(self.k8s.conn_id, self.ns,
                                 conflict_retries=self.k8s.conflict_retries)
        self.kserve = KServe(self)
        self.leases = Leases(self.kube, self.k8s.poll_interval)

    # -- deploy ----------------------------------------------------------------------------

    def deploy_model(
        self,
        config: DeploymentConfig,
        strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        wait: bool = True,
    ) -> ServiceHandle:
        plan = resolve_strategy(strategy)
        config = self._complete(config)
        deadline = time.monotonic() + timeout
        name = res.resource_name(config.server_name)
        with self.leases.hold(config.server_name, name, timeout):
            if self._mode() == "kserve":
                return self.kserve.deploy(config, plan, deadline, wait=wait)
            return self._deploy(name, config, plan, deadline, wait=wait)

    def _deploy(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float, *,
        wait: bool,
    ) -> ServiceHandle:
        current = self._read_deployment(name)
        started_at = utcnow()
        if current is None:
            return self._create(name, config, plan, deadline, wait=wait)
        self._check_owned(current, config)
        if current.replicas == 0:  # stopped: nothing serves, start it with the new version
            return self._start_with(current, config, plan, deadline, started_at, wait=wait)
        try:
            self._store_prediction_token(name, config)
            self._roll_template(current, config, deadline)
            self._wait_rollout(name, deadline)
            self._run_strategy(name, config, plan, deadline, started_at)
        except DeploymentError as err:
            self._record("Deployment", name, config, plan.name, plan.name, "failed",
                         started_at, message=err.message)
            raise
        return self._handle(self._server(name))

    def _create(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float, *,
        wait: bool,
    ) -> ServiceHandle:
        started_at = utcnow()
        token = secrets.token_urlsafe(24)
        what = f"create the model server of {config.server_name!r} in namespace {self.ns!r}"
        self._apply("Secret", res.secret_name(name),
                    res.secret(name, config, token, self._prediction_token(config)), what)
        self._apply("ConfigMap", name, res.config_map(name, config, self._pod_tracking(config)),
                    what)
        event = _event(config, "start", "succeeded", started_at)
        notes = res.server_annotations(config, strategy=plan.name, deployed_at=utcnow(),
                                history=[event], replicas=self.k8s.replicas)
        body = res.deployment(name, config, self.k8s, annotations=notes,
                              progress_deadline=self._progress_deadline(deadline))
        self.kube.call(f"create Deployment {self.ns}/{name}",
                       self.kube.apps.create_namespaced_deployment, self.ns, body)
        self._apply("Service", name, res.service(name, config, self.k8s), what)
        if wait:
            try:
                self._wait_rollout(name, deadline)
            except DeploymentError as err:
                self._scale(name, 0)
                self._record("Deployment", name, config, plan.name, "start", "failed", started_at,
                             message=err.message, replace_last=True)
                raise
        return self._handle(self._server(name))

    def _start_with(
        self, current: Server, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str, *, wait: bool,
    ) -> ServiceHandle:
        name = current.name
        self._store_prediction_token(name, config)
        self._write_model(name, config)
        self._record("Deployment", name, config, plan.name, "start", "succeeded", started_at,
                     deployed=True)
        if not wait:
            self._roll_template(current, config, deadline, watch=False)
            self._scale(name, int(current.annotations.get(res.REPLICAS) or self.k8s.replicas))
            return self._handle(self._server(name))
        try:
            self._roll_template(current, config, deadline, watch=False)
            return self.start_model_server(current.uid, max(deadline - time.monotonic(), 1.0))
        except DeploymentError as err:  # the record goes back to what it was
            self._write_model(name, current.config)
            self._record("Deployment", name, current.config, plan.name, "start", "failed",
                         started_at, message=err.message, deployed=True, replace_last=True)
            raise

    def _run_strategy(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str,
    ) -> None:
        t0 = time.monotonic()
        with self._pods_admin(name) as admin:
            if admin.serving() == {config.model_version: 1.0}:
                log.info("version %s already serves %s", config.model_version, name)
                self._record("Deployment", name, config, plan.name, plan.name, "unchanged",
                             started_at)
                return
            rollout = Rollout(admin=admin, model_name=config.model_name,
                              model_uri=config.model_uri, version=config.model_version,
                              deadline=deadline)
            plan.run(rollout)
        self._write_model(name, config)
        serving = None if rollout.serving_since is None else rollout.serving_since - t0
        self._record("Deployment", name, config, plan.name, plan.name, "succeeded", started_at,
                     deployed=True, seconds_to_serving=serving)

    def _roll_template(
        self, current: Server, config: DeploymentConfig, deadline: float, *, watch: bool = True
    ) -> None:
        """Roll the pods to a changed template (image, resources, workers); on failure put
        the previous template back, so the old pods (never stopped: maxUnavailable 0)
        keep serving."""
        template = res.pod_template(current.name, config, self.k8s)
        digest = res.template_hash(template)
        if current.annotations.get(res.TEMPLATE_HASH) == digest:
            return
        previous = current.obj["spec"]["template"]
        previous_hash = current.annotations.get(res.TEMPLATE_HASH, "")
        what = f"Deployment {self.ns}/{current.name}"
        log.info("%s: rolling out a new pod template", what)
        self._patch_deployment(current.name, {
            "metadata": {"annotations": {res.TEMPLATE_HASH: digest}},
            "spec": {"template": template,
                     "progressDeadlineSeconds": self._progress_deadline(deadline)},
        })
        if not watch:  # a stopped server: nothing serves, nothing to roll back to
            return
        try:
            self._wait_rollout(current.name, deadline)
        except DeploymentError as err:
            self.kube.call(
                f"roll back the pod template of {what}",
                self.kube.apps.patch_namespaced_deployment, current.name, self.ns,
                [{"op": "replace", "path": "/spec/template", "value": previous},
                 {"op": "replace", "path": "/metadata/annotations/ctcd.io~1template-hash",
                  "value": previous_hash}],
                _content_type=JSON_PATCH,
            )
            raise type(err)(
                f"{err.message} The pod template of {what} was rolled back to the previous "
                f"one; version {current.config.model_version} keeps serving."
            ) from err

    # -- queries (pure) ----------------------------------------------------------------------

    def find_model_server(
        self,
        *,
        running: bool = False,
        service_id: str | None = None,
        server_name: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        model_uri: str | None = None,
    ) -> list[ServiceHandle]:
        labelled = {"server_name": server_name, "dag_id": dag_id, "run_id": run_id,
                    "task_id": task_id, "model_name": model_name, "model_version": model_version}
        wanted = {**labelled, "service_id": service_id, "model_uri": model_uri}
        found = []
        for server in self._servers(res.selector(**labelled)):
            handle = self._handle(server)
            if any(v is not None and getattr(handle, k) != v for k, v in wanted.items()):
                continue
            if running and self._observe(server, handle) is not ServiceStatus.RUNNING:
                continue
            found.append(handle)
        return sorted(found, key=lambda h: h.deployed_at or "", reverse=True)

    def status(self, service_id: str) -> ServiceStatus:
        server = self._resolve(service_id)
        return self._observe(server, self._handle(server))

    def describe_model_server(self, service_id: str) -> ServerDescription:
        server = self._resolve(service_id)
        handle = self._handle(server)
        status = self._observe(server, handle)
        versions: tuple[VersionStats, ...] = ()
        if status is not ServiceStatus.UNREACHABLE and server.kind == "Deployment":
            try:
                with self._pods_admin(server.name) as admin:
                    versions = tuple(admin.versions().values())
            except CtcdError as err:
                log.warning("could not read the versions of %s: %s", server.name, err.message)
        st = server.obj.get("status") or {}
        return ServerDescription(
            handle=handle, status=status,
            desired_state="running" if server.replicas > 0 else "stopped",
            versions=versions,
            history=tuple(_to_event(e) for e in server.history()),
            last_error=server.annotations.get(res.LAST_ERROR),
            details={
                "namespace": self.ns, "kind": server.kind, "name": server.name,
                "replicas": server.replicas, "ready_replicas": st.get("readyReplicas", 0),
                "image": self._image(server), "tracking_uri": server.config.tracking_uri,
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        deadline = time.monotonic() + timeout
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            return self._start(self._resolve(server.uid), deadline)  # as it is now

    def _start(self, server: Server, deadline: float) -> ServiceHandle:
        if server.kind == "InferenceService":
            return self.kserve.start(server, deadline)
        if server.replicas == 0:
            replicas = int(server.annotations.get(res.REPLICAS) or self.k8s.replicas)
            self._scale(server.name, max(replicas, 1))
        try:
            self._wait_rollout(server.name, deadline)
        except DeploymentError as err:
            self._scale(server.name, 0)
            self._annotate(server.name, {res.LAST_ERROR: err.message[:2000]})
            raise ServerStartFailed(
                f"model server {server.config.server_name!r} did not start, so it was scaled "
                f"to zero again: {err.message}"
            ) from err
        self._annotate(server.name, {res.LAST_ERROR: None})
        return self._handle(self._server(server.name))

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            self._stop(self._resolve(server.uid), timeout, force)

    def _stop(self, server: Server, timeout: float, force: bool) -> None:
        if server.kind == "InferenceService":
            self.kserve.stop(server)
            return
        if server.replicas > 0:
            self._annotate(server.name, {res.REPLICAS: str(server.replicas)})
            self._scale(server.name, 0)
        deadline = time.monotonic() + timeout
        while pods := self._pods(server.name):
            if time.monotonic() >= deadline:
                if not force:
                    raise ServerStopFailed(
                        f"Deployment {self.ns}/{server.name} is scaled to 0 but pods "
                        f"{', '.join(p['metadata']['name'] for p in pods)} are still "
                        f"terminating after {timeout:.0f}s; retry with force=True (`--force`)"
                    )
                for pod in pods:
                    self.kube.call(f"delete Pod {self.ns}/{pod['metadata']['name']}",
                                   self.kube.core.delete_namespaced_pod,
                                   pod["metadata"]["name"], self.ns, grace_period_seconds=0)
                return
            time.sleep(self.k8s.poll_interval)

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            self._remove(self._resolve(server.uid), timeout, force)

    def _remove(self, server: Server, timeout: float, force: bool) -> None:
        if server.kind == "InferenceService":
            self.kserve.delete(server)
        else:
            self._stop(server, timeout, force)
            self._delete("Deployment", server.name, self.kube.apps.delete_namespaced_deployment)
            self._delete("Service", server.name, self.kube.core.delete_namespaced_service)
        self._delete("ConfigMap", server.name, self.kube.core.delete_namespaced_config_map)
        self._delete("Secret", res.secret_name(server.name),
                     self.kube.core.delete_namespaced_secret)

    def rollback_model_server(
        self, service_id: str, strategy: StrategySpec = "blue_green",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ServiceHandle:
        server = self._resolve(service_id)
        current = server.config.model_version
        for event in server.history():
            config = DeploymentConfig.from_dict(event["config"])
            if event["outcome"] == "succeeded" and config.model_version != current:
                return self.deploy_model(config, strategy=strategy, timeout=timeout)
        raise DeploymentError(
            f"model server {server.config.server_name!r} has no earlier successfully deployed "
            f"version than {current} in its history (annotation {res.HISTORY} of "
            f"{server.kind} {self.ns}/{server.name}) to roll back to"
        )

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        server = self._resolve(service_id)
        pods = self._pods(server.name if server.kind == "Deployment" else None, server)
        container = res.CONTAINER if server.kind == "Deployment" else res.KSERVE_CONTAINER
        if follow and pods:
            pods = pods[-1:]  # the newest pod; following several would interleave them
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            prefix = f"[{pod_name}] " if len(pods) > 1 else ""
            for line in self.kube.pod_log(pod_name, container, follow=follow, tail=tail):
                yield prefix + line

    # -- internals: reading ------------------------------------------------------------------

    def _mode(self) -> str:
        mode = self.k8s.mode.strip().lower()
        if mode not in ("deployment", "kserve", "auto"):
            raise InvalidParams(f"CTCD_K8S_MODE={mode!r}: use deployment, kserve or auto")
        if mode == "deployment":
            return mode
        installed = self.kserve.installed()
        if mode == "kserve":
            self.kserve.require(installed)
            return mode
        return "kserve" if installed else "deployment"

    def _servers(self, selector: str) -> list[Server]:
        items = self.kube.json(
            f"list Deployments in {self.ns}", self.kube.apps.list_namespaced_deployment,
            self.ns, label_selector=selector,
        ).get("items", [])
        found = [Server("Deployment", d) for d in items
                 if res.CONFIG in (d["metadata"].get("annotations") or {})]
        if self.k8s.mode != "deployment" and self.kserve.installed():
            found += self.kserve.servers(selector)
        return found

    def _resolve(self, service_id: str) -> Server:
        servers = self._servers(res.selector())
        for server in servers:
            if service_id in (server.uid, server.name, server.config.server_name):
                return server
        raise ModelServerNotFound(f"service id {service_id!r} in namespace {self.ns!r}")

    def _read_deployment(self, name: str) -> Server | None:
        try:
            return self._server(name)
        except NotFound:
            return None

    def _server(self, name: str) -> Server:
        return Server("Deployment", self.kube.json(
            f"read Deployment {self.ns}/{name}",
            self.kube.apps.read_namespaced_deployment, name, self.ns))

    def _pods(self, name: str | None, server: Server | None = None) -> list[dict[str, Any]]:
        if name is not None:
            selector = f"{res.INSTANCE}={name}"
        else:
            assert server is not None
            selector = self.kserve.pod_selector(server)
        items = self.kube.json(f"list Pods of {name or server}",
                               self.kube.core.list_namespaced_pod, self.ns,
                               label_selector=selector).get("items", [])
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return sorted(live, key=lambda p: p["metadata"].get("creationTimestamp", ""))

    def _ready_pods(self, name: str | None, server: Server | None = None) -> list[tuple[str, str]]:
        ready = []
        for pod in self._pods(name, server):
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                url = self.k8s.pod_url.format(pod_ip=pod["status"].get("podIP", ""),
                                              pod=pod["metadata"]["name"], port=res.PORT)
                ready.append((pod["metadata"]["name"], url))
        return ready

    def _admin_token(self, name: str) -> str:
        data = self.kube.json(f"read Secret {self.ns}/{res.secret_name(name)}",
                              self.kube.core.read_namespaced_secret,
                              res.secret_name(name), self.ns).get("data", {})
        import base64

        return base64.b64decode(data.get("token", "")).decode()

    def _pods_admin(self, name: str, server: Server | None = None) -> PodsAdmin:
        pods = self._ready_pods(name, server)
        if not pods:
            raise RolloutFailed(f"Deployment {self.ns}/{name} has no ready pod to deploy into")
        return PodsAdmin(pods, token=self._admin_token(name))

    def _observe(self, server: Server, handle: ServiceHandle) -> ServiceStatus:
        if server.replicas == 0:
            return ServiceStatus.UNREACHABLE
        return probe(handle.endpoint, handle.model_name)

    def _handle(self, server: Server) -> ServiceHandle:
        config = server.config
        return ServiceHandle(
            service_id=server.uid, backend=self.name, server_name=config.server_name,
            model_name=config.model_name, model_version=config.model_version,
            model_uri=config.model_uri, endpoint=self._endpoint(server),
            dag_id=config.dag_id, run_id=config.run_id, task_id=config.task_id,
            mlflow_run_id=config.mlflow_run_id, strategy=server.annotations.get(res.STRATEGY),
            deployed_at=server.annotations.get(res.DEPLOYED_AT),
        )

    def _endpoint(self, server: Server) -> str:
        if server.kind == "InferenceService":
            return self.kserve.endpoint(server)
        template = self.k8s.service_url
        node_port = ""
        if "{node_port}" in template:
            try:
                svc = self.kube.json(f"read Service {self.ns}/{server.name}",
                                     self.kube.core.read_namespaced_service, server.name, self.ns)
                node_port = str(svc["spec"]["ports"][0].get("nodePort", ""))
            except NotFound:
                pass
        return template.format(service=server.name, namespace=self.ns, port=res.PORT,
                               node_port=node_port)

    def _image(self, server: Server) -> str:
        spec = server.obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("predictor") or {}
        containers = pod.get("containers") or [{}]
        return str(containers[0].get("image", ""))

    def _tracking_uri(self) -> str:
        return redact_uri(self.k8s.tracking_uri or self.settings.tracking_uri())

    def _complete(self, config: DeploymentConfig) -> DeploymentConfig:
        """``config`` as recorded: tracking server, the server's non-secret options and
        whether predictions need a token (from this process's ``CTCD_SERVER_*``, as the
        local backend does), so pods started later start the same server."""
        return replace(
            config,
            tracking_uri=config.tracking_uri or self._tracking_uri(),
            server_options=config.server_options or options.options_from_env(os.environ),
            requires_token=config.requires_token or bool(
                os.environ.get(options.TOKEN_VARIABLE)),
        )

    def _prediction_token(self, config: DeploymentConfig) -> str | None:
        """The prediction token for the server's Secret (never recorded elsewhere)."""
        if not config.requires_token:
            return None
        token = os.environ.get(options.TOKEN_VARIABLE)
        if not token:
            raise ServerStartFailed(
                f"model server {config.server_name!r} answers only requests with a bearer "
                f"token, and none is stored outside its Secret: set {options.TOKEN_VARIABLE} "
                "in the environment that deploys it"
            )
        return token

    def _pod_tracking(self, config: DeploymentConfig) -> str:
        return config.tracking_uri or self._tracking_uri()

    def _progress_deadline(self, deadline: float) -> int:
        return max(int(deadline - time.monotonic()), 30)

    def _check_owned(self, server: Server, config: DeploymentConfig) -> None:
        labels = server.obj["metadata"].get("labels") or {}
        if labels.get(res.MANAGED_BY) != "ctcd" or res.CONFIG not in server.annotations:
            raise DeploymentError(
                f"Deployment {self.ns}/{server.name} exists but was not created by ctcd; "
                f"deploy {config.server_name!r} under another server name or remove it"
            )

    # -- internals: writing ------------------------------------------------------------------

    def _wait_rollout(self, name: str, deadline: float) -> None:
        seen: set[str] = set()
        what = f"Deployment {self.ns}/{name}"
        while True:
            deployment = self._server(name).obj
            if rollout_done(deployment):
                return
            if reason := deadline_exceeded(deployment):
                raise RolloutFailed(f"{what} did not roll out: {reason} ({progress(deployment)})")
            for pod in self._pods(name):
                if problem := pod_problem(pod, seen):
                    raise type(problem)(f"{what}: {problem}") from None
            if time.monotonic() >= deadline:
                raise RolloutFailed(
                    f"{what} was not ready within the timeout ({progress(deployment)}); see "
                    "`ctcd models logs` and `kubectl describe pods` for why"
                )
            time.sleep(self.k8s.poll_interval)

    def _apply(self, kind: str, name: str, body: dict[str, Any], what: str) -> None:
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

    def _store_prediction_token(self, name: str, config: DeploymentConfig) -> None:
        token = self._prediction_token(config)
        if token:
            self.kube.call(f"update Secret {self.ns}/{res.secret_name(name)}",
                           self.kube.core.patch_namespaced_secret, res.secret_name(name),
                           self.ns, {"stringData": {res.PREDICTION_TOKEN: token}},
                           _content_type=STRATEGIC)

    def _write_model(self, name: str, config: DeploymentConfig) -> None:
        """The version pods start with from now on (no restart: env is read at start)."""
        self.kube.call(
            f"update ConfigMap {self.ns}/{name}", self.kube.core.patch_namespaced_config_map,
            name, self.ns, {"data": res.model_data(config, self._pod_tracking(config))},
            _content_type=STRATEGIC,
        )

    def _patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        what = f"patch Deployment {self.ns}/{name}"
        self.kube.update(
            what, lambda: self._server(name).obj, lambda _current: json.loads(json.dumps(patch)),
            lambda body: self.kube.apps.patch_namespaced_deployment(
                name, self.ns, body, _content_type=STRATEGIC, _preload_content=False),
        )

    def _annotate(self, name: str, values: dict[str, str | None]) -> None:
        self._patch_deployment(name, {"metadata": {"annotations": values}})

    def _writer(self, kind: str, name: str) -> tuple[Any, Any]:
        """How to read and patch (with a resourceVersion precondition) one server object."""
        if kind == "InferenceService":
            return (lambda: self.kserve.read(name).obj,
                    lambda body: self.kserve.patch(name, body))
        return (lambda: self._server(name).obj,
                lambda body: self.kube.apps.patch_namespaced_deployment(
                    name, self.ns, body, _content_type=STRATEGIC, _preload_content=False))

    def _scale(self, name: str, replicas: int) -> None:
        self.kube.call(
            f"scale Deployment {self.ns}/{name} to {replicas}",
            self.kube.apps.patch_namespaced_deployment_scale, name, self.ns,
            {"spec": {"replicas": replicas}}, _content_type=STRATEGIC,
        )

    def _delete(self, kind: str, name: str, fn: Any) -> None:
        with contextlib.suppress(NotFound):
            self.kube.call(f"delete {kind} {self.ns}/{name}", fn, name, self.ns,
                           propagation_policy="Background")

    def _record(
        self, kind: str, name: str, config: DeploymentConfig, strategy: str, event_strategy: str,
        outcome: str, started_at: str, *, message: str | None = None, deployed: bool = False,
        seconds_to_serving: float | None = None, replace_last: bool = False,
    ) -> None:
        """Append the outcome to the history annotation; a deployed config also becomes the
        server's config, labels and strategy (one patch, retried on conflict)."""
        event = _event(config, event_strategy, outcome, started_at, message, seconds_to_serving)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            notes = current["metadata"].get("annotations") or {}
            history = json.loads(notes.get(res.HISTORY, "[]"))
            history = [event, *(history[1:] if replace_last else history)][:res.HISTORY_LIMIT]
            patch: dict[str, Any] = {"metadata": {"annotations": {
                res.HISTORY: json.dumps(history),
                res.LAST_ERROR: message[:2000] if message else None,
            }}}
            if deployed:
                patch["metadata"]["annotations"].update({
                    res.CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                    res.STRATEGY: strategy, res.DEPLOYED_AT: utcnow(),
                })
                patch["metadata"]["labels"] = res.labels(name, config)
            return patch

        read, write = self._writer(kind, name)
        self.kube.update(f"record the deployment on {kind} {self.ns}/{name}", read, change,
                         write)


def _event(
    config: DeploymentConfig, strategy: str, outcome: str, started_at: str,
    message: str | None = None, seconds_to_serving: float | None = None,
) -> dict[str, Any]:
    return {"config": config.to_dict(), "strategy": strategy, "outcome": outcome,
            "started_at": started_at, "finished_at": utcnow(),
            "message": message[:500] if message else None,
            "seconds_to_serving": seconds_to_serving}


def _to_event(data: dict[str, Any]) -> DeploymentEvent:
    return DeploymentEvent(
        config=DeploymentConfig.from_dict(data["config"]), strategy=data["strategy"],
        outcome=data["outcome"], started_at=data["started_at"],
        finished_at=data["finished_at"], message=data.get("message"),
        seconds_to_serving=data.get("seconds_to_serving"),
    )
