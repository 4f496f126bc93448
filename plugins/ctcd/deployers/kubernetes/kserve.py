"""``kserve`` mode: a model server as a KServe ``InferenceService`` (where its CRD is installed).

Each model version is a new predictor revision (the model is in the container's
environment). Strategies run unchanged (:mod:`ctcd.deployers.strategies`) against
:class:`KServeTraffic`, which maps their steps onto KServe's own canary rollout:

* load a version: patch the predictor with ``canaryTrafficPercent: 0`` and wait until the
  new revision is ready (it takes no traffic yet);
* move traffic: ``canaryTrafficPercent: N``; all of it (promote): the field removed, so
  KServe rolls the new revision out;
* roll back: ``canaryTrafficPercent: 0``, KServe's documented way to pin traffic to the
  previous revision;
* analysis: each ready predictor pod's admin API reports the counters of the version it
  serves, added up per version (the same numbers and judge as everywhere else).

``stop``/``start`` set and clear the ``serving.kserve.io/stop`` annotation (KServe >= 0.15).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import replace
from typing import Any

from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.deployers.base import DeploymentConfig
from ctcd.deployers.kubernetes import resources as res
from ctcd.deployers.kubernetes import servers
from ctcd.deployers.kubernetes.api import MERGE, Change, NotFound, Patch
from ctcd.deployers.kubernetes.cluster import Cluster
from ctcd.deployers.kubernetes.errors import KServeUnavailable, RolloutFailed
from ctcd.deployers.kubernetes.pods import PodsAdmin
from ctcd.deployers.kubernetes.servers import STOP, Server
from ctcd.deployers.strategies import Rollout, Strategy
from ctcd.errors import CtcdError, DeploymentError, VersionRejected
from ctcd.services.handle import ServiceHandle

ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"


class KServe:
    """Model servers as InferenceServices, through ``cluster`` (its namespace, API
    clients and settings)."""

    kind = "InferenceService"
    container = res.KSERVE_CONTAINER

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.kube, self.k8s, self.ns = cluster.kube, cluster.k8s, cluster.ns
        self._installed: bool | None = None

    # -- discovery and reading ---------------------------------------------------------------

    def installed(self) -> bool:
        """Whether the cluster serves ``serving.kserve.io/v1beta1`` InferenceServices
        (API discovery, which every authenticated client may read)."""
        if self._installed is None:
            kube = self.kube
            try:
                found = kube.json("discover KServe's API group", kube.custom.get_api_resources,
                                  res.KSERVE_GROUP, res.KSERVE_VERSION)
                self._installed = any(r.get("name") == res.KSERVE_PLURAL
                                      for r in found.get("resources", []))
            except NotFound:
                self._installed = False
        return self._installed

    def require(self, installed: bool) -> None:
        if not installed:
            raise KServeUnavailable(
                f"CTCD_K8S_MODE=kserve, but the cluster has no {res.KSERVE_PLURAL}."
                f"{res.KSERVE_GROUP}/{res.KSERVE_VERSION} API (KServe's CRDs are not "
                "installed); install KServe or use CTCD_K8S_MODE=deployment (or auto)"
            )

    def servers(self, selector: str) -> list[Server]:
        kube = self.kube
        items = kube.json(f"list InferenceServices in {self.ns}",
                          kube.custom.list_namespaced_custom_object, res.KSERVE_GROUP,
                          res.KSERVE_VERSION, self.ns, res.KSERVE_PLURAL,
                          label_selector=selector).get("items", [])
        return [Server("InferenceService", i) for i in items
                if res.CONFIG in (i["metadata"].get("annotations") or {})]

    def read(self, name: str) -> Server:
        kube = self.kube
        return Server("InferenceService", kube.json(
            f"read InferenceService {self.ns}/{name}", kube.custom.get_namespaced_custom_object,
            res.KSERVE_GROUP, res.KSERVE_VERSION, self.ns, res.KSERVE_PLURAL, name))

    def patch(self, name: str, body: Patch) -> Any:
        kube = self.kube
        return kube.call(f"patch InferenceService {self.ns}/{name}",
                         kube.custom.patch_namespaced_custom_object, res.KSERVE_GROUP,
                         res.KSERVE_VERSION, self.ns, res.KSERVE_PLURAL, name, body,
                         _content_type=MERGE, _preload_content=False)

    def endpoint(self, server: Server) -> str:
        address = ((server.obj.get("status") or {}).get("address") or {}).get("url")
        if address:
            return str(address)
        return self.k8s.service_url.format(service=server.name, namespace=self.ns,
                                             port=80, node_port="")

    def pod_selector(self, server: Server) -> str:
        return f"{ISVC_LABEL}={server.name}"

    def handle(self, server: Server) -> ServiceHandle:
        return servers.handle(server, self.endpoint(server))

    def update(self, name: str, change: Change, what: str) -> None:
        """Read-modify-write with a resourceVersion precondition (a JSON merge patch:
        custom resources take no strategic merge patch)."""
        self.kube.update(what, lambda: self.read(name).obj, change,
                         lambda body: self.patch(name, body))

    def _record(self, name: str, change: Change) -> None:
        self.update(name, change, f"record the deployment on InferenceService {self.ns}/{name}")

    # -- deploy and lifecycle ----------------------------------------------------------------

    def deploy(
        self, config: DeploymentConfig, plan: Strategy, deadline: float, *, wait: bool
    ) -> ServiceHandle:
        name = res.resource_name(config.server_name)
        started_at = servers.utcnow()
        try:
            current: Server | None = self.read(name)
        except NotFound:
            current = None
        if current is None:
            return self._create(name, config, plan, deadline, started_at, wait=wait)
        servers.check_owned(current, config, self.ns)
        if current.replicas == 0:
            self.patch(name, {"metadata": {"annotations": {STOP: None}},
                              "spec": {"predictor": self._predictor(config, None)}})
            self._record(name, servers.record(config, plan.name, "start", "succeeded", started_at,
                                              deployed=True))
            return self.start(self.read(name), deadline)
        try:
            with KServeTraffic(self, current, config, deadline) as admin:
                if admin.serving() == {config.model_version: 1.0}:
                    self._record(name, servers.record(config, plan.name, plan.name, "unchanged",
                                                      started_at))
                    return self.handle(current)
                plan.run(Rollout(admin=admin, model_name=config.model_name,
                                 model_uri=config.model_uri, version=config.model_version,
                                 deadline=deadline))
        except DeploymentError as err:
            self._record(name, servers.record(config, plan.name, plan.name, "failed", started_at,
                                              message=err.message))
            raise
        self._record(name, servers.record(config, plan.name, plan.name, "succeeded", started_at,
                                          deployed=True))
        return self.handle(self.read(name))

    def _create(
        self, name: str, config: DeploymentConfig, plan: Strategy, deadline: float,
        started_at: str, *, wait: bool,
    ) -> ServiceHandle:
        self.cluster.apply(
            "Secret", res.secret_name(name),
            res.secret(name, config, secrets.token_urlsafe(24),
                       servers.prediction_token(config)),
            f"create the model server of {config.server_name!r}")
        notes = res.server_annotations(
            config, strategy=plan.name, deployed_at=servers.utcnow(),
            history=[servers.event(config, "start", "succeeded", started_at)],
            replicas=self.k8s.replicas)
        body = res.inference_service(name, config, self.k8s, annotations=notes,
                                     tracking_uri=config.tracking_uri or "")
        self.kube.call(f"create InferenceService {self.ns}/{name}",
                       self.kube.custom.create_namespaced_custom_object, res.KSERVE_GROUP,
                       res.KSERVE_VERSION, self.ns, res.KSERVE_PLURAL, body)
        if wait:
            try:
                self.wait_ready(name, deadline)
            except DeploymentError as err:
                self.patch(name, {"metadata": {"annotations": {STOP: "true"}}})
                self._record(name, servers.record(config, plan.name, "start", "failed", started_at,
                                                  message=err.message, replace_last=True))
                raise
        return self.handle(self.read(name))

    def _predictor(self, config: DeploymentConfig, canary: int | None) -> dict[str, Any]:
        body = res.inference_service(res.resource_name(config.server_name), config, self.k8s,
                                     annotations={}, tracking_uri=config.tracking_uri or "",
                                     canary_percent=canary)
        predictor: dict[str, Any] = body["spec"]["predictor"]
        predictor.setdefault("canaryTrafficPercent", None)  # merge patch: None removes it
        return predictor

    def wait_ready(self, name: str, deadline: float, *, after: str | None = None) -> str:
        """Wait until the predictor's newest revision (other than ``after``) is ready;
        returns its name. Fails on a revision that KServe reports failed."""
        while True:
            server = self.read(name)
            predictor = _predictor_status(server)
            created = predictor.get("latestCreatedRevision")
            if (created and created != after and predictor.get("latestReadyRevision") == created):
                return str(created)
            for condition in (server.obj.get("status") or {}).get("conditions") or []:
                if condition.get("status") == "False" and condition.get("reason") in (
                        "RevisionFailed", "RevisionMissing"):
                    raise RolloutFailed(
                        f"InferenceService {self.ns}/{name}: revision {created} failed: "
                        f"{condition.get('message') or condition.get('reason')}"
                    )
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"InferenceService {self.ns}/{name} was not ready within "
                                    "the timeout; see `kubectl describe inferenceservice`")
            time.sleep(self.k8s.poll_interval)

    def start(self, server: Server, deadline: float) -> ServiceHandle:
        if server.annotations.get(STOP) == "true":
            self.patch(server.name, {"metadata": {"annotations": {STOP: None}}})
        self.wait_ready(server.name, deadline)
        return self.handle(self.read(server.name))

    def stop(self, server: Server, timeout: float = 0, force: bool = False) -> None:
        """KServe scales the predictor to zero itself (the annotation)."""
        self.patch(server.name, {"metadata": {"annotations": {STOP: "true"}}})

    def delete(self, server: Server, timeout: float = 0, force: bool = False) -> None:
        kube = self.kube
        with contextlib.suppress(NotFound):
            kube.call(f"delete InferenceService {self.ns}/{server.name}",
                      kube.custom.delete_namespaced_custom_object, res.KSERVE_GROUP,
                      res.KSERVE_VERSION, self.ns, res.KSERVE_PLURAL, server.name)
        self.cluster.delete("Secret", res.secret_name(server.name))

    def pods(self, server: Server) -> list[dict[str, Any]]:
        return self.cluster.pods(self.pod_selector(server))


class KServeTraffic(AdminClient):
    """The strategies' admin calls as KServe canary rollouts of one InferenceService."""

    def __init__(self, kserve: KServe, server: Server, config: DeploymentConfig,
                 deadline: float) -> None:
        super().__init__(kserve.endpoint(server))
        self.kserve = kserve
        self.name = server.name
        self.previous = server.config
        self.previous_predictor = dict(server.obj["spec"]["predictor"])
        self.config = config
        self.deadline = deadline
        predictor = _predictor_status(server)
        self.rolled_out = predictor.get("latestRolledoutRevision") or predictor.get(
            "latestReadyRevision")
        self.new_revision: str | None = None

    def _revision_versions(self) -> dict[str, str]:
        versions = {str(self.rolled_out): self.previous.model_version}
        if self.new_revision:
            versions[self.new_revision] = self.config.model_version
        return versions

    def _weights(self) -> dict[str, float]:
        traffic = _predictor_status(self.kserve.read(self.name)).get("traffic") or []
        names = self._revision_versions()
        weights: dict[str, float] = {}
        for entry in traffic:
            version = names.get(str(entry.get("revisionName")))
            if version is not None and entry.get("percent", 0) > 0:
                weights[version] = weights.get(version, 0.0) + entry["percent"] / 100.0
        return weights or {self.previous.model_version: 1.0}

    def serving(self) -> dict[str, float]:
        return self._weights()

    def versions(self) -> dict[str, VersionStats]:
        weights = self._weights()
        server = self.kserve.read(self.name)
        pods = self.kserve.cluster.ready_pods(self.kserve.pod_selector(server), res.PORT)
        stats: dict[str, VersionStats] = {}
        if pods:
            token = self.kserve.cluster.secret(res.secret_name(self.name)).get("token")
            admin = PodsAdmin(pods, token=token)
            try:
                stats = admin.versions(strict=False)
            finally:
                admin.close()
        ready = {self.previous.model_version}
        if self.new_revision:
            ready.add(self.config.model_version)
        out = {}
        for version in {*weights, *stats, *ready}:
            # A version whose revision KServe reports ready, with the pods' counters if any
            # pod answered (KServe routes and readies revisions; the pods count requests).
            base = stats.get(version) or VersionStats(
                version=version, model_uri="", weight=0.0,
                state="ready" if version in ready else "loading", requests=0, errors=0,
                latency_ms_p50=None, latency_ms_p99=None)
            out[version] = replace(base, weight=weights.get(version, 0.0))
        return out

    def load(self, model_uri: str, version: str, *, timeout: float) -> None:
        self.kserve.patch(self.name, {"spec": {"predictor": self.kserve._predictor(
            self.config, 0)}})
        try:
            self.new_revision = self.kserve.wait_ready(self.name, self.deadline,
                                                       after=self.rolled_out)
        except CtcdError as err:
            self._restore()
            raise VersionRejected(f"{err.message}; traffic stays on version "
                                  f"{self.previous.model_version}") from err

    def version_ready(self, model_name: str, version: str) -> bool:
        return self.new_revision is not None

    def set_traffic(self, weights: dict[str, float]) -> None:
        percent = round(weights.get(self.config.model_version, 0.0) * 100)
        value = None if percent >= 100 else percent
        self.kserve.patch(self.name, {"spec": {"predictor": {"canaryTrafficPercent": value}}})
        while time.monotonic() < self.deadline:  # until the route carries the new split
            if abs(self._weights().get(self.config.model_version, 0.0) * 100 - percent) < 1:
                return
            time.sleep(self.kserve.k8s.poll_interval)
        raise RolloutFailed(f"InferenceService {self.kserve.ns}/{self.name} did not move "
                            f"{percent}% of traffic to version {self.config.model_version}")

    def unload(self, version: str) -> None:
        """KServe retires revisions without traffic itself; a rolled-back version stays
        pinned at ``canaryTrafficPercent: 0`` as KServe documents."""

    def start_shadow(self, plan: dict[str, Any]) -> dict[str, Any] | None:
        raise VersionRejected(
            f"a shadow of version {plan.get('version')} needs the ctcd model server's own "
            "traffic split, and KServe routes revisions itself (it mirrors nothing); the "
            "previous version keeps serving. Use CTCD_K8S_MODE=deployment for shadow "
            "deployments, or blue_green / canary on KServe")

    def _restore(self) -> None:
        """The predictor exactly as it was (image and resources included)."""
        self.kserve.patch(self.name, {"spec": {"predictor": {
            **self.previous_predictor, "canaryTrafficPercent": None}}})


def _predictor_status(server: Server) -> dict[str, Any]:
    status = server.obj.get("status") or {}
    return dict((status.get("components") or {}).get("predictor") or {})

