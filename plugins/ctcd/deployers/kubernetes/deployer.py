"""The ``kubernetes`` model deployer: model servers as Deployments (or KServe
InferenceServices) in one namespace, driven through Airflow's ``KubernetesHook``.

The deployer keeps the contract (:mod:`ctcd.deployers.base`): it holds the per-server
lease, chooses the mode and answers the queries. Each mode does the work on its kind of
object through the one :class:`.cluster.Cluster`: :class:`.deployments.Deployments`
(``deployment`` mode) and :class:`.kserve.KServe` (``kserve`` mode); streaming scorers are
:class:`.scorers.KubernetesScorers`.

The cluster is the registry: handles are rebuilt from labels and annotations
(:mod:`.servers`); the service id is the Deployment's (or InferenceService's)
``metadata.uid``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace

from ctcd.deployers import options, traffic
from ctcd.deployers.admin import VersionStats
from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    DeploymentConfig,
    ServerDescription,
    redact_uri,
)
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes import servers
from ctcd.deployers.kubernetes.api import Kube
from ctcd.deployers.kubernetes.cluster import Cluster
from ctcd.deployers.kubernetes.deployments import Deployments
from ctcd.deployers.kubernetes.kserve import KServe
from ctcd.deployers.kubernetes.scorers import KubernetesScorers
from ctcd.deployers.kubernetes.servers import Server
from ctcd.deployers.scorers import ScorersFrom
from ctcd.deployers.strategies import StrategySpec, resolve_strategy
from ctcd.errors import (
    CtcdError,
    DeploymentError,
    InvalidParams,
    ModelServerNotFound,
)
from ctcd.services.handle import ServiceHandle, ServiceStatus, probe
from ctcd.settings import Settings, get_settings

log = logging.getLogger(__name__)


class KubernetesDeployer(ScorersFrom):
    """Model servers in a Kubernetes namespace (``CTCD_K8S_*`` settings); streaming scorers
    too (:mod:`.scorers`). Every object is reached through one :class:`.cluster.Cluster`."""

    name = servers.BACKEND

    def __init__(self, settings: Settings | None = None, *, kube: Kube | None = None) -> None:
        self.settings = settings or get_settings()
        self.k8s = self.settings.kubernetes
        self.ns = self.k8s.namespace
        self.cluster = Cluster(
            kube or Kube(self.k8s.conn_id, self.ns, conflict_retries=self.k8s.conflict_retries),
            self.k8s)
        self.deployments = Deployments(self.cluster)
        self.kserve = KServe(self.cluster)
        self.leases = self.cluster.leases

    @property
    def scorers(self) -> KubernetesScorers:
        """The streaming scorers of this namespace (:mod:`.scorers`)."""
        return KubernetesScorers(self.cluster, self._tracking_uri())

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
            mode = self.kserve if self._mode() == "kserve" else self.deployments
            return mode.deploy(config, plan, deadline, wait=wait)

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
        shadow = None
        if status is not ServiceStatus.UNREACHABLE and server.kind == "Deployment":
            try:
                with self.deployments.pods_admin(server.name) as admin:
                    versions = tuple(admin.versions().values())
                    shadow = admin.shadow_state(samples=0)
            except CtcdError as err:
                log.warning("could not read the versions of %s: %s", server.name, err.message)
        st = server.obj.get("status") or {}
        return ServerDescription(
            handle=handle, status=status,
            desired_state="running" if server.replicas > 0 else "stopped",
            versions=versions, shadow=shadow,
            history=tuple(servers.to_event(e) for e in server.history()),
            last_error=server.annotations.get(res.LAST_ERROR),
            details={
                "namespace": self.ns, "kind": server.kind, "name": server.name,
                "replicas": server.replicas, "ready_replicas": st.get("readyReplicas", 0),
                "image": server.image(), "tracking_uri": server.config.tracking_uri,
            },
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        deadline = time.monotonic() + timeout
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            server = self._resolve(server.uid)  # as it is now
            return self._mode_of(server).start(server, deadline)

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            server = self._resolve(server.uid)
            self._mode_of(server).stop(server, timeout, force)

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        server = self._resolve(service_id)
        with self.leases.hold(server.config.server_name, server.name, timeout):
            server = self._resolve(server.uid)
            self._mode_of(server).delete(server, timeout, force)

    def rollback_model_server(
        self, service_id: str, strategy: StrategySpec = "blue_green",
        timeout: float = DEFAULT_TIMEOUT, *, rollout_only: bool = False,
    ) -> ServiceHandle:
        server = self._resolve(service_id)
        if rollout_only and server.kind != self.deployments.kind:
            raise traffic.NoRolloutInProgress(
                f"model server {server.config.server_name!r} is a KServe InferenceService: "
                "it has no version under trial here to drop; nothing was changed")
        if rollout_only or (server.kind == self.deployments.kind
                            and self.deployments.in_rollout(server)):
            return self._end_rollout(server, traffic.drop, timeout)
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

    def promote_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        server = self._resolve(service_id)
        if server.kind != self.deployments.kind:
            raise InvalidParams(
                f"model server {server.config.server_name!r} is a KServe InferenceService: "
                "KServe moves a canary's traffic itself (canaryTrafficPercent), so it cannot be "
                "promoted by hand here; deploy the version again with strategy replace")
        return self._end_rollout(server, traffic.promote, timeout)

    def _end_rollout(self, server: Server, action: traffic.Action, timeout: float
                     ) -> ServiceHandle:
        def lease() -> AbstractContextManager[None]:
            return self.leases.hold(server.config.server_name, server.name, timeout)

        return self.deployments.end_rollout(server, action, servers.utcnow(), lease)

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        server = self._resolve(service_id)
        mode = self._mode_of(server)
        yield from self.cluster.logs(mode.pods(server), mode.container, follow=follow,
                                     tail=tail)

    # -- internals ---------------------------------------------------------------------------

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

    def _mode_of(self, server: Server) -> Deployments | KServe:
        return self.kserve if server.kind == self.kserve.kind else self.deployments

    def _servers(self, selector: str) -> list[Server]:
        found = self.deployments.servers(selector)
        if self.k8s.mode != "deployment" and self.kserve.installed():
            found += self.kserve.servers(selector)
        return found

    def _resolve(self, service_id: str) -> Server:
        for server in self._servers(res.selector()):
            if service_id in (server.uid, server.name, server.config.server_name):
                return server
        raise ModelServerNotFound(f"service id {service_id!r} in namespace {self.ns!r}")

    def _observe(self, server: Server, handle: ServiceHandle) -> ServiceStatus:
        if server.replicas == 0:
            return ServiceStatus.UNREACHABLE
        return probe(handle.endpoint, handle.model_name)

    def _handle(self, server: Server) -> ServiceHandle:
        return self._mode_of(server).handle(server)

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
