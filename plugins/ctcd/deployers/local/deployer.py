"""The ``local`` model deployer: the project's model server as detached local processes.

* One server per model (``DeploymentConfig.server_name``); ``deploy_model`` loads a new
  version into the running server with a strategy, and starts a process only when none runs.
* State lives in ``<CTCD_HOME>/servers/registry.db``; a file lock per server serializes
  deploys, starts and stops of that server across processes.
* Ports come from ``CTCD_SERVER_PORT_RANGE`` and stay with a server across restarts.
* Whether a server runs is observed (process identity + readiness over HTTP), never stored.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from ctcd.deployers import traffic
from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    HELD,
    DeploymentConfig,
    DeploymentEvent,
    ServerDescription,
    failed_outcome,
)
from ctcd.deployers.local import process
from ctcd.deployers.local.launch import Launcher, process_ref
from ctcd.deployers.local.locks import operation_lock
from ctcd.deployers.local.logs import read_log
from ctcd.deployers.local.scorers import LocalScorers
from ctcd.deployers.local.store import ServerRecord, ServerStore, utcnow
from ctcd.deployers.scorers import ScorersFrom
from ctcd.deployers.strategies import Rollout, Strategy, StrategySpec, resolve_strategy
from ctcd.errors import (
    DeploymentError,
    InvalidParams,
    ModelServerUnavailable,
    PortUnavailable,
    ServerStartFailed,
    ServerStopFailed,
)
from ctcd.services.handle import ServiceHandle, ServiceStatus, probe
from ctcd.settings import Settings, get_settings

log = logging.getLogger(__name__)


class LocalDeployer(ScorersFrom):
    """Model servers as detached processes on this machine (the embedded default), and
    streaming scorers (:mod:`ctcd.deployers.local.scorers`)."""

    name = "local"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        server_command: Sequence[str] | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        """``server_command`` is the argv prefix that starts a model server (default
        ``python -m ctcd.serving``); the server's own options are appended to it."""
        self.settings = settings or get_settings()
        self.server_command = list(server_command or [sys.executable, "-m", "ctcd.serving"])
        self.dir = self.settings.servers_dir
        self.poll_interval = poll_interval
        self._store: ServerStore | None = None

    @property
    def store(self) -> ServerStore:
        if self._store is None:
            self._store = ServerStore(self.dir / "registry.db")
        return self._store

    @property
    def launcher(self) -> Launcher:
        """Starts this deployer's server processes (ports, command, readiness)."""
        return Launcher(self.settings, self.store, self.dir, self.server_command,
                        self.poll_interval)

    @property
    def scorers(self) -> LocalScorers:
        """The streaming scorers this backend runs (:mod:`ctcd.deployers.local.scorers`)."""
        return LocalScorers(self.settings)

    # -- deploy ----------------------------------------------------------------------------

    def deploy_model(
        self,
        config: DeploymentConfig,
        strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        wait: bool = True,
    ) -> ServiceHandle:
        """Deploy ``config`` into its server (started if none runs) following ``strategy``.

        With ``wait=False`` a server that has to be started is launched and returned without
        waiting for readiness (the deferrable operator waits in the triggerer instead).
        """
        plan = resolve_strategy(strategy)
        config = self.launcher.complete(config)
        deadline = time.monotonic() + timeout
        started_at, t0 = utcnow(), time.monotonic()
        with self._locked(config.server_name, timeout):
            record = self.store.by_name(config.server_name)
            if record is None:
                record = self.launcher.create(config)
            elif self._alive(record):
                return self._deploy_in_place(record, config, plan, deadline, started_at, t0)
            # No process serves this model: nothing to protect, start with the new version.
            previous = record.config
            try:
                record = self.store.update(record.id, config=config, desired_state="running")
                self.launcher.spawn(record, config)
                if wait:
                    self.launcher.wait_ready(record, deadline)
            except (ServerStartFailed, PortUnavailable) as err:
                self.store.update(record.id, config=previous, desired_state="stopped")
                self.store.record_deployment(
                    record.id, config, strategy="start", outcome="failed",
                    started_at=started_at, message=err.message,
                )
                raise
            record = self.store.update(
                record.id, strategy=plan.name, deployed_at=utcnow(), last_error=None
            )
            # Not waited for: pending until a status call observes it ready (or gone).
            self.store.record_deployment(
                record.id, config, strategy="start", started_at=started_at,
                outcome="succeeded" if wait else "pending",
                seconds_to_serving=time.monotonic() - t0 if wait else None,
            )
            return self._handle(record)

    def _deploy_in_place(
        self, record: ServerRecord, config: DeploymentConfig, strategy: Strategy,
        deadline: float, started_at: str, t0: float,
    ) -> ServiceHandle:
        self.launcher.wait_ready(record, deadline)
        with AdminClient(record.endpoint, token=record.admin_token) as admin:
            if admin.serving() == {config.model_version: 1.0}:
                log.info("version %s already serves %s; nothing to do",
                         config.model_version, record.name)
                self.store.record_deployment(
                    record.id, config, strategy=strategy.name, outcome="unchanged",
                    started_at=started_at,
                )
                return self._handle(record)
            rollout = Rollout(
                admin=admin, model_name=config.model_name, model_uri=config.model_uri,
                version=config.model_version,
                deadline=deadline,
            )
            try:
                strategy.run(rollout)
            except DeploymentError as err:
                self.store.record_deployment(
                    record.id, config, strategy=strategy.name, outcome=failed_outcome(err),
                    started_at=started_at, message=err.message, notes=rollout.events,
                )
                raise
        record = self.store.update(
            record.id, config=config, strategy=strategy.name, deployed_at=utcnow(),
            last_error=None,
        )
        serving = None if rollout.serving_since is None else rollout.serving_since - t0
        self.store.record_deployment(
            record.id, config, strategy=strategy.name, outcome="succeeded",
            started_at=started_at, seconds_to_serving=serving, notes=rollout.events,
        )
        return self._handle(record)

    # -- registry queries (pure) -------------------------------------------------------------

    def find_model_server(
        self,
        *,
        running: bool = False,
        service_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        model_uri: str | None = None,
        server_name: str | None = None,
    ) -> list[ServiceHandle]:
        if not (self.dir / "registry.db").exists():
            return []
        wanted = {
            "service_id": service_id, "dag_id": dag_id, "run_id": run_id, "task_id": task_id,
            "model_name": model_name, "model_version": model_version, "model_uri": model_uri,
            "server_name": server_name,
        }
        found = []
        for record in self.store.all():
            handle = self._handle(record)
            if any(v is not None and getattr(handle, k) != v for k, v in wanted.items()):
                continue
            if running and not self.is_running(record):
                continue
            found.append(handle)
        return sorted(found, key=lambda h: h.deployed_at or "", reverse=True)

    def status(self, service_id: str) -> ServiceStatus:
        return self._observe(self.store.resolve(service_id))

    def describe_model_server(self, service_id: str) -> ServerDescription:
        record = self.store.resolve(service_id)
        status = self._observe(record)
        versions: tuple[VersionStats, ...] = ()
        shadow = None
        if status is not ServiceStatus.UNREACHABLE:
            try:
                with AdminClient(record.endpoint, token=record.admin_token, timeout=5) as admin:
                    versions = tuple(admin.versions().values())
                    shadow = admin.shadow_state(samples=0)
            except (DeploymentError, ModelServerUnavailable) as err:
                log.warning("could not read the versions of %s: %s", record.name, err.message)
        return ServerDescription(
            handle=self._handle(record), status=status, desired_state=record.desired_state,
            versions=versions, shadow=shadow, history=tuple(self.store.history(record.id, 20)),
            last_error=record.last_error,
            details={
                "pid": record.pid if self._alive(record) else None, "host": record.host,
                "port": record.port, "tracking_uri": record.config.tracking_uri,
                "log": str(self.launcher.log_path(record)),
            },
        )

    def is_running(self, record: ServerRecord) -> bool:
        return self._observe(record) is ServiceStatus.RUNNING

    def record(self, service_id: str) -> ServerRecord:
        return self.store.resolve(service_id)

    def history(self, service_id: str, limit: int = 20) -> list[DeploymentEvent]:
        return self.store.history(self.store.resolve(service_id).id, limit)

    def admin(self, service_id: str) -> AdminClient:
        record = self.store.resolve(service_id)
        return AdminClient(record.endpoint, token=record.admin_token)

    # -- lifecycle ---------------------------------------------------------------------------

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, *, wait: bool = True
    ) -> ServiceHandle:
        """Start a stopped or crashed server with the same id, port and last deployed version."""
        deadline = time.monotonic() + timeout
        record = self.store.resolve(service_id)
        with self._locked(record.name, timeout):
            record = self.store.resolve(record.id)
            if not self._alive(record):
                try:
                    self.launcher.spawn(record, record.config)
                except (ServerStartFailed, PortUnavailable) as err:
                    self.store.update(record.id, desired_state="stopped",
                                      last_error=err.message[:2000])
                    raise
                record = self.store.update(record.id, desired_state="running")
            if wait:
                self.launcher.wait_ready(record, deadline)
            return self._handle(self.store.resolve(record.id))

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        record = self.store.resolve(service_id)
        with self._locked(record.name, timeout):
            self._stop(self.store.resolve(record.id), timeout, force)
            self.store.settle_pending(record.id, "failed", "stopped before it was observed ready")

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        record = self.store.resolve(service_id)
        with self._locked(record.name, timeout):
            self._stop(self.store.resolve(record.id), timeout, force)
            self.store.delete(record.id)
            log_path = self.launcher.log_path(record)
            log_path.unlink(missing_ok=True)
            if log_path.parent.exists() and not any(log_path.parent.iterdir()):
                log_path.parent.rmdir()

    def rollback_model_server(
        self, service_id: str, strategy: StrategySpec = "blue_green",
        timeout: float = DEFAULT_TIMEOUT, *, rollout_only: bool = False,
    ) -> ServiceHandle:
        """Drop the version of a rollout in progress, else (unless ``rollout_only``) deploy
        the version that served before the current one."""
        record = self.store.resolve(service_id)
        if rollout_only:  # the server itself refuses when nothing is under trial
            return self._by_hand(record, traffic.drop, timeout)
        if self._in_rollout(record):
            return self._by_hand(record, traffic.drop, timeout)
        current = record.config.model_version
        for entry in self.store.history(record.id, limit=200):
            if entry.outcome == "succeeded" and entry.config.model_version != current:
                return self.deploy_model(entry.config, strategy=strategy, timeout=timeout)
        raise DeploymentError(
            f"model server {record.name!r} has no earlier successfully deployed version than "
            f"{current} to roll back to"
        )

    def promote_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        """All traffic to the version of the rollout in progress, now."""
        return self._by_hand(self.store.resolve(service_id), traffic.promote, timeout)

    def _in_rollout(self, record: ServerRecord) -> bool:
        if not self._alive(record):
            return False
        try:
            with AdminClient(record.endpoint, token=record.admin_token, timeout=5) as admin:
                return traffic.candidate(admin.versions(), record.config.model_version) is not None
        except (DeploymentError, ModelServerUnavailable):
            return False

    def _by_hand(self, record: ServerRecord, action: traffic.Action, timeout: float
                 ) -> ServiceHandle:
        """Promote or drop the version under trial on the live server, then take the
        server's lock: a deploy still running its strategy holds it until it has seen the
        change, ended with it and recorded it; if none did, the change is recorded here."""
        started_at = utcnow()
        with AdminClient(record.endpoint, token=record.admin_token) as admin:
            found = action(admin, record.config.model_version, record.name)
        with self._locked(record.name, timeout):
            latest = self.store.history(record.id, limit=1)
            if not latest or latest[0].finished_at < started_at:
                self._record_by_hand(self.store.resolve(record.id), action, found, started_at)
        return self._handle(self.store.resolve(record.id))

    def _record_by_hand(self, record: ServerRecord, action: traffic.Action,
                        found: traffic.Candidate, started_at: str) -> None:
        if action is traffic.promote:
            # A shadow held for a person keeps the lineage its deploy recorded.
            held = [e.config for e in self.store.history(record.id, limit=1)
                    if e.outcome == HELD and e.config.model_version == found.version]
            config = held[0] if held else traffic.promoted_config(record.config, found)
            self.store.update(record.id, config=config, strategy="promote",
                              deployed_at=utcnow(), last_error=None)
            self.store.record_deployment(
                record.id, config, strategy="promote", outcome="succeeded",
                started_at=started_at, message=traffic.message(action, found))
            return
        self.store.record_deployment(
            record.id, record.config, strategy="rollback", outcome="succeeded",
            started_at=started_at, message=traffic.message(action, found))

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        record = self.store.resolve(service_id)
        return read_log(
            self.launcher.log_path(record), follow=follow, tail=tail,
            still_running=lambda: self._alive(self.store.resolve(record.id)),
        )

    # -- internals ---------------------------------------------------------------------------

    def _stop(self, record: ServerRecord, timeout: float, force: bool) -> None:
        self.store.update(record.id, desired_state="stopped")
        if not process.terminate(process_ref(record), timeout=timeout, force=force):
            raise ServerStopFailed(
                f"model server {record.name!r} (pid {record.pid}) did not stop within "
                f"{timeout:.0f}s; retry with force=True (`--force`) to kill it"
            )

    def _alive(self, record: ServerRecord) -> bool:
        return process.alive(process_ref(record))

    def _observe(self, record: ServerRecord) -> ServiceStatus:
        if not self._alive(record):
            self.store.settle_pending(record.id, "failed", "the server process ended (or was "
                                      "stopped) before it was observed ready; see its log")
            return ServiceStatus.UNREACHABLE
        status = probe(record.endpoint, record.config.model_name)
        if status is ServiceStatus.RUNNING:
            self.store.settle_pending(record.id, "succeeded")
        return status

    def _handle(self, record: ServerRecord) -> ServiceHandle:
        config = record.config
        return ServiceHandle(
            service_id=record.id, backend=self.name, server_name=record.name,
            model_name=config.model_name, model_version=config.model_version,
            model_uri=config.model_uri, endpoint=record.endpoint, dag_id=config.dag_id,
            run_id=config.run_id, task_id=config.task_id, mlflow_run_id=config.mlflow_run_id,
            strategy=record.strategy, deployed_at=record.deployed_at or record.created_at,
        )

    def _locked(self, server_name: str, timeout: float) -> AbstractContextManager[None]:
        return operation_lock(self._lock_path(server_name), timeout,
                              f"model server {server_name!r}")

    def _lock_path(self, server_name: str) -> Path:
        if not server_name:
            raise InvalidParams("a model server needs a name")
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(server_name.encode()).hexdigest()[:16]
        return self.dir / "locks" / f"{digest}.lock"

