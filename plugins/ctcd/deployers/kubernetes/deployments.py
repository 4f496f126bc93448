"""``deployment`` mode: a model server as a Deployment + Service, its model in a ConfigMap.

* One server per ``DeploymentConfig.server_name``: ``ConfigMap`` + ``Secret`` +
  ``Deployment`` + ``Service`` named ``ctcd-<server>`` (see :mod:`.resources`).
* A new model version is loaded into the running pods by the strategy (replace, blue/green,
  canary, :mod:`ctcd.deployers.strategies` unchanged) through every pod's admin API
  (:class:`.pods.PodsAdmin`), then written to the ConfigMap, so pods started later start with
  it. No pod restarts for a new version; the Deployment's annotations record it.
* A change of the pod template (image, resources, workers) is a rolling update
  (``maxUnavailable: 0``); when it fails (image pull, crash loop, progress deadline,
  timeout) the previous template is restored and the old pods never stopped serving.

:class:`.kserve.KServe` is the same interface for ``kserve`` mode; the deployer
(:mod:`.deployer`) holds the lease and chooses the mode.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ctcd.deployers import traffic
from ctcd.deployers.base import HELD, DeploymentConfig, failed_outcome
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes import servers
from ctcd.deployers.kubernetes.api import Change
from ctcd.deployers.kubernetes.cluster import Cluster, instance
from ctcd.deployers.kubernetes.errors import RolloutFailed
from ctcd.deployers.kubernetes.pods import PodsAdmin
from ctcd.deployers.kubernetes.servers import Server
from ctcd.deployers.strategies import Rollout, Strategy
from ctcd.errors import DeploymentError, ServerStartFailed
from ctcd.services.handle import ServiceHandle

log = logging.getLogger(__name__)


class Deployments:
    """Model servers as Deployments, through ``cluster`` (its namespace, API clients and
    settings)."""

    kind = "Deployment"
    container = res.CONTAINER

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.k8s, self.ns = cluster.k8s, cluster.ns

    # -- deploy ------------------------------------------------------------------------------

    def deploy(
        self, config: DeploymentConfig, plan: Strategy, deadline: float, *, wait: bool
    ) -> ServiceHandle:
        """Create the server, start it with ``config`` if it is stopped, or move its running
        pods to ``config`` by ``plan``; see the module's docstring."""
        name = res.resource_name(config.server_name)
        current = self.read(name)
        started_at = servers.utcnow()
        if current is None:
            return self._create(name, config, plan, deadline, started_at, wait=wait)
        servers.check_owned(current, config, self.ns)
        if current.replicas == 0:  # stopped: nothing serves, start it with the new version
            return self._start_with(current, config, plan, deadline, started_at, wait=wait)
        try:
            self._store_prediction_token(name, config)
            self._roll_template(current, config, deadline)
            self.cluster.wait_rollout(name, deadline)
            self._run_strategy(name, config, plan, deadline, started_at)
        except DeploymentError as err:
            self._record(name, servers.record(config, plan.name, plan.name,
                                              failed_outcome(err), started_at,
                                              message=err.message, notes=err.notes))
            raise
        return self.handle(self.server(name))

    def _create(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str, *, wait: bool,
    ) -> ServiceHandle:
        what = f"create the model server of {config.server_name!r} in namespace {self.ns!r}"
        token = secrets.token_urlsafe(24)
        self.cluster.apply("Secret", res.secret_name(name),
                           res.secret(name, config, token, servers.prediction_token(config)),
                           what)
        self.cluster.apply("ConfigMap", name,
                           res.config_map(name, config, config.tracking_uri or ""), what)
        notes = res.server_annotations(
            config, strategy=plan.name, deployed_at=servers.utcnow(),
            history=[servers.event(config, "start", "succeeded", started_at)],
            replicas=self.k8s.replicas)
        self.cluster.create_deployment(
            res.deployment(name, config, self.k8s, annotations=notes,
                           progress_deadline=self.cluster.progress_deadline(deadline)), what)
        self.cluster.apply("Service", name, res.service(name, config, self.k8s), what)
        if wait:
            try:
                self.cluster.wait_rollout(name, deadline)
            except DeploymentError as err:
                self.cluster.scale(name, 0)
                self._record(name, servers.record(config, plan.name, "start", "failed", started_at,
                                                  message=err.message, replace_last=True))
                raise
        return self.handle(self.server(name))

    def _start_with(
        self, current: Server, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str, *, wait: bool,
    ) -> ServiceHandle:
        name = current.name
        self._store_prediction_token(name, config)
        self._write_model(name, config)
        self._record(name, servers.record(config, plan.name, "start", "succeeded", started_at,
                                          deployed=True))
        if not wait:
            self._roll_template(current, config, deadline, watch=False)
            self.cluster.scale(name, int(current.annotations.get(res.REPLICAS)
                                         or self.k8s.replicas))
            return self.handle(self.server(name))
        try:
            self._roll_template(current, config, deadline, watch=False)
            return self.start(self.server(name), deadline)
        except DeploymentError as err:  # the record goes back to what it was
            self._write_model(name, current.config)
            self._record(name, servers.record(current.config, plan.name, "start", "failed",
                                              started_at, message=err.message, deployed=True,
                                              replace_last=True))
            raise

    def _run_strategy(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str,
    ) -> None:
        t0 = time.monotonic()
        with self.pods_admin(name) as admin:
            if admin.serving() == {config.model_version: 1.0}:
                log.info("version %s already serves %s", config.model_version, name)
                self._record(name, servers.record(config, plan.name, plan.name, "unchanged",
                                                  started_at))
                return
            rollout = Rollout(admin=admin, model_name=config.model_name,
                              model_uri=config.model_uri, version=config.model_version,
                              deadline=deadline)
            try:
                plan.run(rollout)
            except DeploymentError as err:
                err.notes = tuple(rollout.events)
                raise
        self._write_model(name, config)
        serving = None if rollout.serving_since is None else rollout.serving_since - t0
        self._record(name, servers.record(config, plan.name, plan.name, "succeeded", started_at,
                                          deployed=True, seconds_to_serving=serving,
                                          notes=rollout.events))

    def end_rollout(self, server: Server, action: traffic.Action, started_at: str,
                    lease: Callable[[], AbstractContextManager[None]]) -> ServiceHandle:
        """Promote or drop the version under trial in every pod, then take the server's
        lease: a deploy still running its strategy holds it until it has ended with the
        change and recorded it; if none did, the change is recorded here."""
        with self.pods_admin(server.name) as admin:
            found = action(admin, server.config.model_version, server.config.server_name)
        with lease():
            now = self.server(server.name)
            latest = now.history()[:1]
            if not latest or latest[0]["finished_at"] < started_at:
                message = traffic.message(action, found)
                if action is traffic.promote:
                    # a shadow held for a person keeps the lineage its deploy recorded
                    held = [DeploymentConfig.from_dict(e["config"]) for e in latest
                            if e["outcome"] == HELD]
                    config = (held[0] if held and held[0].model_version == found.version
                              else traffic.promoted_config(now.config, found))
                    self._write_model(now.name, config)
                    change = servers.record(config, "promote", "promote", "succeeded",
                                            started_at, message=message, deployed=True)
                else:
                    change = servers.record(now.config, now.annotations.get(res.STRATEGY, ""),
                                            "rollback", "succeeded", started_at,
                                            message=message)
                self._record(now.name, change)
        return self.handle(self.server(server.name))

    def in_rollout(self, server: Server) -> bool:
        """Whether a version is loaded beside the recorded one (asked of the pods now)."""
        if server.replicas == 0:
            return False
        try:
            with self.pods_admin(server.name) as admin:
                return traffic.candidate(admin.versions(), server.config.model_version) is not None
        except DeploymentError:
            return False

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
        what = f"Deployment {self.ns}/{current.name}"
        log.info("%s: rolling out a new pod template", what)
        self.cluster.replace_template(
            current.name, template, {res.TEMPLATE_HASH: digest},
            progress_deadline=self.cluster.progress_deadline(deadline),
            what=f"roll out a new pod template on {what}")
        if not watch:  # a stopped server: nothing serves, nothing to roll back to
            return
        try:
            self.cluster.wait_rollout(current.name, deadline)
        except DeploymentError as err:
            self.cluster.replace_template(
                current.name, current.obj["spec"]["template"],
                {res.TEMPLATE_HASH: current.annotations.get(res.TEMPLATE_HASH, "")},
                what=f"roll back the pod template of {what}")
            raise type(err)(
                f"{err.message} The pod template of {what} was rolled back to the previous "
                f"one; version {current.config.model_version} keeps serving."
            ) from err

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, server: Server, deadline: float) -> ServiceHandle:
        """Scale a stopped server back to its replicas and wait until they are ready; if
        they are not, scale it to zero again."""
        if server.replicas == 0:
            replicas = int(server.annotations.get(res.REPLICAS) or self.k8s.replicas)
            self.cluster.scale(server.name, max(replicas, 1))
        try:
            self.cluster.wait_rollout(server.name, deadline)
        except DeploymentError as err:
            self.cluster.scale(server.name, 0)
            self.cluster.annotate(server.name, {res.LAST_ERROR: err.message[:2000]})
            raise ServerStartFailed(
                f"model server {server.config.server_name!r} did not start, so it was scaled "
                f"to zero again: {err.message}"
            ) from err
        self.cluster.annotate(server.name, {res.LAST_ERROR: None})
        return self.handle(self.server(server.name))


    def stop(self, server: Server, timeout: float, force: bool) -> None:
        self.cluster.stop(server.name, server.replicas, timeout, force)

    def delete(self, server: Server, timeout: float, force: bool) -> None:
        self.stop(server, timeout, force)
        for kind in ("Deployment", "Service", "ConfigMap"):
            self.cluster.delete(kind, server.name)
        self.cluster.delete("Secret", res.secret_name(server.name))

    # -- reading -----------------------------------------------------------------------------

    def servers(self, selector: str) -> list[Server]:
        return [Server(self.kind, d) for d in self.cluster.deployments(selector)
                if res.CONFIG in (d["metadata"].get("annotations") or {})]

    def read(self, name: str) -> Server | None:
        found = self.cluster.deployment_or_none(name)
        return None if found is None else Server(self.kind, found)

    def server(self, name: str) -> Server:
        return Server(self.kind, self.cluster.deployment(name))

    def handle(self, server: Server) -> ServiceHandle:
        template = self.k8s.service_url
        node_port = self.cluster.node_port(server.name) if "{node_port}" in template else ""
        return servers.handle(server, template.format(
            service=server.name, namespace=self.ns, port=res.PORT, node_port=node_port))

    def pods(self, server: Server) -> list[dict[str, Any]]:
        return self.cluster.pods(instance(server.name))

    def pods_admin(self, name: str) -> PodsAdmin:
        """The admin API of every ready pod of the server, as one client."""
        pods = self.cluster.ready_pods(instance(name), res.PORT)
        if not pods:
            raise RolloutFailed(f"Deployment {self.ns}/{name} has no ready pod to deploy into")
        return PodsAdmin(pods, token=self.cluster.secret(res.secret_name(name)).get("token"))

    # -- writing -----------------------------------------------------------------------------

    def _store_prediction_token(self, name: str, config: DeploymentConfig) -> None:
        token = servers.prediction_token(config)
        if token:
            self.cluster.patch_secret(res.secret_name(name), {res.PREDICTION_TOKEN: token})

    def _write_model(self, name: str, config: DeploymentConfig) -> None:
        """The version pods start with from now on (no restart: env is read at start)."""
        self.cluster.patch_config_map(
            name, dict(res.model_data(config, config.tracking_uri or "")))

    def _record(self, name: str, change: Change) -> None:
        self.cluster.update_deployment(name, change,
                                       f"record the deployment on Deployment {self.ns}/{name}")
