"""The model-deployer contract: what every backend does, and the values it deals in.

A backend is any class that satisfies :class:`ModelDeployer` (structurally: no base class to
inherit) and is constructed with one keyword argument, ``settings``
(:class:`ctcd.settings.Settings`). It is chosen by ``CTCD_DEPLOYER``: ``local`` or a dotted
path ``package.module:Class`` (see :func:`ctcd.deployers.get_deployer`). The CLI, the
operators, the tasks and the UI use nothing but this contract, so a backend that keeps it
works with all of them.

Two parts:

* :class:`ModelDeployer`: the methods every backend has (deploy, find, status, describe,
  start, stop, delete, logs).
* Optional capabilities, each a small protocol a caller tests with ``isinstance``:
  :class:`SupportsRollback` (redeploy the previous version from the backend's own history,
  or drop a new version still in its rollout), :class:`SupportsPromotion` (end a rollout
  at once in favour of the new version) and :class:`ctcd.deployers.scorers.SupportsScorers`
  (run streaming scorers like model servers; its own module, with the values it deals
  in). A backend without one gets a clear "backend X cannot ..." from the caller, never an
  ``AttributeError``.

Rules every backend keeps:

* **One server per** ``DeploymentConfig.server_name``. ``deploy_model`` updates the server
  already serving that name in place, following the strategy; it never starts a second one.
  Deploying the version already serving changes nothing (a retried task is safe).
* **Failures leave the previous version serving** and raise a
  :class:`ctcd.errors.DeploymentError` subclass whose message says what went wrong and what
  to do. A server that did not become ready in time is stopped, never reported running.
* **Desired state is not observed state.** ``find_model_server`` is a pure query (it writes
  nothing); ``running=True``, :meth:`ModelDeployer.status` and
  :meth:`ModelDeployer.describe_model_server` report what was *just checked*, never what
  was recorded.
* **A server's record holds everything needed to restart it as deployed** (the
  :class:`DeploymentConfig`: model URI, tracking server address, workers) and **never a
  secret**: no tokens or passwords, no credentials in URIs (see :func:`redact_uri`).
  ``start_model_server`` must work from any process, e.g. a plain shell with no MLflow
  variables set.
* ``service_id`` is stable for the life of a server, across stop and start. Methods taking a
  ``service_id`` accept the full id a handle carries (callers resolve names and prefixes
  with :func:`ctcd.deployers.resolve_service`) and raise
  :class:`ctcd.errors.ModelServerNotFound` when no server has it.
* Handles carry ``backend=self.name``, so ``get_deployer(handle.backend)`` finds the backend
  that made them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ctcd.deployers.options import check_options
from ctcd.errors import InvalidParams, ShadowAwaitingDecision

if TYPE_CHECKING:
    from ctcd.deployers.admin import VersionStats
    from ctcd.deployers.strategies import StrategySpec
    from ctcd.services.handle import ServiceHandle, ServiceStatus

DEFAULT_TIMEOUT = 300.0


def redact_uri(uri: str) -> str:
    """``uri`` without credentials (``http://user:secret@host`` -> ``http://host``).

    Records and handles store URIs through this, so no password or token embedded in a URI
    ever lands in a registry, an annotation or an XCom.
    """
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of the dataclass ``cls`` (a record written by
    another release may hold more, or fewer, keys)."""
    known = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return {k: v for k, v in data.items() if k in known}


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """What to serve, where to load it from, and where it came from (lineage).

    It is the desired state a backend records for a server and restarts it from, so it
    holds no secrets. ``server`` names the model server to deploy into; by default there is
    one server per ``model_name``. Give another name only to run a second, separate server
    for one model. ``tracking_uri`` is the MLflow tracking server that ``models:/`` URIs are
    resolved against; left empty, the backend fills in the deploying process's tracking URI
    (``CTCD_MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_URI``) when it records the deployment.
    Credentials in it are dropped (:func:`redact_uri`): the server process takes them from
    its own environment (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``).

    ``server_options`` are the model server's non-secret settings
    (:class:`ctcd.serving.settings.ServerSettings` names, e.g. ``{"max_batch_rows":
    "256"}``); left empty, a backend may record those of the deploying process's
    ``CTCD_SERVER_*`` environment (:mod:`ctcd.deployers.options`). ``requires_token`` says
    the server answers predictions only with a bearer token; the token itself is never
    recorded, so a start without ``CTCD_SERVER_TOKEN`` in the environment fails rather
    than serving unprotected.
    """

    model_name: str
    model_uri: str
    model_version: str
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    server: str | None = None
    workers: int = 1
    server_options: dict[str, str] = field(default_factory=dict)
    requires_token: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model_name", "model_uri", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidParams(f"DeploymentConfig.{name} must be a non-empty string")
        if self.workers < 1:
            raise InvalidParams("DeploymentConfig.workers must be at least 1")
        check_options(self.server_options)
        if self.tracking_uri is not None:
            object.__setattr__(self, "tracking_uri", redact_uri(self.tracking_uri) or None)

    @property
    def server_name(self) -> str:
        return self.server or self.model_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentConfig:
        return cls(**known_fields(cls, data))


HELD = "held"


def failed_outcome(err: Exception) -> str:
    """The recorded outcome of a deploy that ended with ``err``: ``held`` for a shadow
    handed to a person (:class:`ctcd.errors.ShadowAwaitingDecision`), else ``failed``."""
    return HELD if isinstance(err, ShadowAwaitingDecision) else "failed"


@dataclass(frozen=True, kw_only=True)
class DeploymentEvent:
    """One deployment of a server, as the backend recorded it (newest first in a history).

    ``outcome`` is ``succeeded``, ``unchanged`` (that version was already serving),
    ``failed`` (``message`` says why; the previous version kept serving) or ``held`` (a
    shadow too little used to judge, left running for a person to promote or drop; the
    previous version serves). ``strategy`` is
    the strategy's name, ``start`` when a stopped server was started with the version, or
    ``promote`` / ``rollback`` for a rollout ended by hand. ``notes`` are the strategy's
    analysis, step by step (``"canary step 10% passed: 0 errors in 57 requests, p99 12.0
    ms"``): the evidence a person reads before approving a version.
    """

    config: DeploymentConfig
    strategy: str
    outcome: str
    started_at: str
    finished_at: str
    message: str | None = None
    seconds_to_serving: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.config.model_version, "model_uri": self.config.model_uri,
            "mlflow_run_id": self.config.mlflow_run_id, "strategy": self.strategy,
            "outcome": self.outcome, "message": self.message, "started_at": self.started_at,
            "finished_at": self.finished_at, "seconds_to_serving": self.seconds_to_serving,
            "dag_id": self.config.dag_id, "run_id": self.config.run_id,
            "task_id": self.config.task_id, "notes": list(self.notes),
        }


@dataclass(frozen=True, kw_only=True)
class ServerDescription:
    """Everything a backend knows about one server, its observed parts just checked.

    :param handle: the server's handle (identity, endpoint, lineage of the serving version).
    :param status: observed now (:class:`ctcd.services.ServiceStatus`).
    :param desired_state: ``running`` or ``stopped`` as last asked of the backend (``None``
        when the backend does not manage the server's life, e.g. servers run by others).
    :param versions: the versions loaded in the server with their traffic weights and
        counters, read from the server now; empty when it does not answer.
    :param shadow: the shadow running on the server now, as its admin API reports it
        (``GET /admin/shadow``: the version, ``mirror_percent``, ``live_versions`` and the
        comparison, ``cumulative`` and per window, without samples; merged over pods);
        ``None`` when no shadow runs or the server does not answer.
    :param history: recorded deployments, newest first (empty if the backend keeps none).
    :param last_error: the last start or deploy failure still relevant, if any.
    :param details: backend-specific facts for display, e.g. ``pid`` and ``port`` (local) or
        ``namespace`` and ``replicas`` (Kubernetes). Plain JSON values only; no secrets.
    """

    handle: ServiceHandle
    status: ServiceStatus
    desired_state: str | None = None
    versions: tuple[VersionStats, ...] = ()
    shadow: Mapping[str, Any] | None = None
    history: tuple[DeploymentEvent, ...] = ()
    last_error: str | None = None
    details: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``ctcd models describe --json``, the UI): raw numbers, no rounding."""
        return {
            **self.handle.serialize(),
            "status": self.status.value,
            "desired_state": self.desired_state,
            "last_error": self.last_error,
            "details": dict(self.details),
            "versions": [asdict(v) for v in self.versions],
            "shadow": dict(self.shadow) if self.shadow is not None else None,
            "history": [event.to_dict() for event in self.history],
        }


@runtime_checkable
class ModelDeployer(Protocol):
    """Deploys models to long-running model servers and keeps a registry of them.

    ``name`` is the backend's name as ``CTCD_DEPLOYER`` spells it (``get_deployer`` sets it
    to the dotted path a user-supplied backend was loaded from).
    """

    name: str

    def deploy_model(
        self,
        config: DeploymentConfig,
        strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        wait: bool = True,
    ) -> ServiceHandle:
        """Serve ``config`` from the server named ``config.server_name`` and return its
        handle.

        If that server runs, load the new version into it following ``strategy``
        (:func:`ctcd.deployers.resolve_strategy`: ``replace``, ``blue_green``, ``canary``,
        with the same analysis and automatic rollback everywhere). If it does not, start it
        with the new version (nothing serves, so there is nothing to protect). Record the
        config (with ``tracking_uri`` filled in and redacted) and the outcome.

        ``wait=False`` is the deferrable start: when a server has to be *started*, return
        as soon as it is launched, before it is ready; the caller then waits for readiness
        itself (the deploy operator in Airflow's triggerer, polling ``handle.endpoint``),
        confirms with :meth:`status` and calls :meth:`stop_model_server` if it never became
        ready. An update of a running server always completes before returning, and a
        backend that cannot hand over a starting server may ignore ``wait`` and wait.

        Raises :class:`ctcd.errors.InvalidStrategy` for a bad strategy, and a
        :class:`ctcd.errors.DeploymentError` subclass when the deployment fails
        (``VersionRejected``, ``RolledBack``, ``ServerStartFailed``, ``PortUnavailable``...),
        the previous version still serving, all within ``timeout`` seconds.
        """
        ...

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
        """Handles of the servers matching every given filter, newest deployment first.

        A pure query: it writes nothing, starts nothing and never fails because a server is
        down. ``running=True`` keeps only servers that answer ready for their model now.
        """
        ...

    def status(self, service_id: str) -> ServiceStatus:
        """The server's state, observed now: ``running`` (answers ready for its model),
        ``unhealthy`` (answers, not ready) or ``unreachable`` (nothing answers, e.g. its
        process died or it was stopped). Raises ``ModelServerNotFound``."""
        ...

    def describe_model_server(self, service_id: str) -> ServerDescription:
        """Everything known about the server (:class:`ServerDescription`), the observed
        parts (status, loaded versions and weights) checked now. A pure query; raises
        ``ModelServerNotFound``."""
        ...

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        """Start a stopped or crashed server as it was last deployed (same id, endpoint,
        version and tracking server, from the record alone) and wait until it is ready.
        Starting a running server changes nothing. Raises ``ServerStartFailed`` (the server
        is stopped again, with its log's tail in the message) or another
        ``DeploymentError`` when the backend cannot start it."""
        ...

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        """Stop the server, keeping its record for :meth:`start_model_server`. With
        ``force``, kill what has not stopped after ``timeout``; without it, raise
        ``ServerStopFailed``. Stopping a stopped server changes nothing."""
        ...

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        """Stop the server (as :meth:`stop_model_server`) and remove everything the backend
        created for it: record, logs, resources."""
        ...

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        """The server's log lines (the last ``tail`` if given), without line ends; with
        ``follow``, keep yielding new lines until the server stops. Empty when the backend
        has no access to the logs."""
        ...


@runtime_checkable
class SupportsRollback(Protocol):
    """Capability: redeploy the version that served before the current one.

    ``if isinstance(deployer, SupportsRollback): deployer.rollback_model_server(...)``.
    """

    def rollback_model_server(
        self,
        service_id: str,
        strategy: StrategySpec = "blue_green",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        rollout_only: bool = False,
    ) -> ServiceHandle:
        """With a rollout in progress (a new version loaded beside the recorded one: a
        canary, a blue/green verification), drop the new version: the recorded one takes
        all traffic again at once, and the deploy that started the rollout fails with
        ``RolledBack``. Otherwise deploy (with ``strategy``, as
        :meth:`ModelDeployer.deploy_model` does) the last successfully deployed version
        other than the current one, with its recorded config (model URI, MLflow run id,
        tracking server). Raises ``DeploymentError`` when the history holds no such
        version, or as ``deploy_model`` does. ``rollout_only``: only ever drop a version
        under trial (a canary, a shadow); with none, raise ``NoRolloutInProgress`` and change
        nothing (a person dropping a shadow that ended a moment ago must not redeploy an
        older version)."""
        ...


@runtime_checkable
class SupportsPromotion(Protocol):
    """Capability: end a rollout in progress at once in favour of the new version.

    ``if isinstance(deployer, SupportsPromotion): deployer.promote_model_server(...)``.
    """

    def promote_model_server(self, service_id: str, timeout: float = DEFAULT_TIMEOUT
                             ) -> ServiceHandle:
        """Give the version under trial (a canary at any weight, a blue/green version
        being verified) all traffic and unload the others; the deploy that started the
        rollout then ends successfully. Returns the server's handle once the rollout is
        over (or after ``timeout``). Raises
        :class:`ctcd.deployers.traffic.NoRolloutInProgress` (409) when no new version is
        loaded beside the serving one."""
        ...
