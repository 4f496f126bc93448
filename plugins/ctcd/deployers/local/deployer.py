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
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import filelock

from ctcd.deployers import options, traffic
from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.deployers.base import (
    DEFAULT_TIMEOUT,
    DeploymentConfig,
    DeploymentEvent,
    ServerDescription,
    redact_uri,
)
from ctcd.deployers.local import process
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
from ctcd.net import port_is_free
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
        config = self._complete(config)
        deadline = time.monotonic() + timeout
        started_at, t0 = utcnow(), time.monotonic()
        with self._locked(config.server_name, timeout):
            record = self.store.by_name(config.server_name)
            if record is None:
                record = self._create(config)
            elif self._alive(record):
                return self._deploy_in_place(record, config, plan, deadline, started_at, t0)
            # No process serves this model: nothing to protect, start with the new version.
            previous = record.config
            try:
                record = self.store.update(record.id, config=config, desired_state="running")
                self._spawn(record, config)
                if wait:
                    self._wait_ready(record, deadline)
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
        self._wait_ready(record, deadline)
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
                    record.id, config, strategy=strategy.name, outcome="failed",
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
                "log": str(self._log_path(record)),
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
                    self._spawn(record, record.config)
                except (ServerStartFailed, PortUnavailable) as err:
                    self.store.update(record.id, desired_state="stopped",
                                      last_error=err.message[:2000])
                    raise
                record = self.store.update(record.id, desired_state="running")
            if wait:
                self._wait_ready(record, deadline)
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
            log_path = self._log_path(record)
            log_path.unlink(missing_ok=True)
            if log_path.parent.exists() and not any(log_path.parent.iterdir()):
                log_path.parent.rmdir()

    def rollback_model_server(
        self, service_id: str, strategy: StrategySpec = "blue_green",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ServiceHandle:
        """Drop the version of a rollout in progress, else deploy the version that served
        before the current one."""
        record = self.store.resolve(service_id)
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
            config = traffic.promoted_config(record.config, found)
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
            self._log_path(record), follow=follow, tail=tail,
            still_running=lambda: self._alive(self.store.resolve(record.id)),
        )

    # -- internals ---------------------------------------------------------------------------

    def _create(self, config: DeploymentConfig) -> ServerRecord:
        host = self.settings.server_host
        low, high = self.settings.server_port_range
        self.dir.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(self.dir / "ports.lock", timeout=60):
            used = self.store.used_ports()
            for port in range(low, high + 1):
                if port not in used and port_is_free(port, host):
                    return self.store.insert(
                        id=uuid.uuid4().hex, name=config.server_name, host=host, port=port,
                        admin_token=secrets.token_urlsafe(24), config=config,
                    )
        raise PortUnavailable(
            f"no free port in CTCD_SERVER_PORT_RANGE {low}-{high}; delete unused servers "
            "(`ctcd models list`, `ctcd models delete`) or widen the range"
        )

    def _spawn(self, record: ServerRecord, config: DeploymentConfig) -> None:
        if not port_is_free(record.port, record.host):
            raise PortUnavailable(
                f"port {record.port} of model server {record.name!r} is held by another "
                "process; stop that process, or delete this server and deploy again to get "
                "a new port"
            )
        argv = [
            *self.server_command,
            "--model-uri", config.model_uri,
            "--model-name", config.model_name,
            "--model-version", config.model_version,
            "--host", record.host, "--port", str(record.port),
            "--workers", str(config.workers),
        ]
        env = options.server_env(
            os.environ, config.server_options, requires_token=config.requires_token
        )
        env["MLFLOW_TRACKING_URI"] = env["CTCD_SERVER_TRACKING_URI"] = self._tracking_uri(config)
        env["CTCD_SERVER_ADMIN_TOKEN"] = record.admin_token
        env["CTCD_HOME"] = str(self.settings.home)
        log_path = self._log_path(record)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as fh:
            fh.write(f"--- {utcnow()} starting {config.model_version} ({config.model_uri})\n")
        ref = process.spawn(argv, env=env, log_path=log_path)
        self.store.update(record.id, pid=ref.pid, pid_started=ref.started, last_error=None)
        log.info("started model server %s (pid %s) on %s", record.name, ref.pid, record.endpoint)

    def _complete(self, config: DeploymentConfig) -> DeploymentConfig:
        """``config`` as it will be recorded: with everything a restart from another process
        needs (tracking server, server options, whether a token is required)."""
        return replace(
            config,
            tracking_uri=config.tracking_uri or self.settings.tracking_uri(),
            server_options=config.server_options or options.options_from_env(os.environ),
            requires_token=config.requires_token or bool(os.environ.get(options.TOKEN_VARIABLE)),
        )

    def _tracking_uri(self, config: DeploymentConfig) -> str:
        """The tracking server the record names. The caller's own URI is used instead only
        when it names that same server (it may carry credentials the record must not)."""
        live = self.settings.tracking_uri()
        if config.tracking_uri is None or redact_uri(live) == config.tracking_uri:
            return live
        return config.tracking_uri

    def _wait_ready(self, record: ServerRecord, deadline: float) -> None:
        """Block until the server answers ready; stop it and fail if it cannot."""
        record = self.store.resolve(record.id)
        ref = _ref(record)
        while True:
            status = probe(record.endpoint, record.config.model_name, timeout=1.0)
            if status is ServiceStatus.RUNNING:
                others = process.foreign_listeners(record.port, ref)
                if not others:
                    return
                process.terminate(ref, timeout=10, force=True)
                message = (
                    f"another process (pid {', '.join(map(str, others))}) listens on port "
                    f"{record.port} of model server {record.name!r} too, so it was stopped; "
                    "stop that process, or delete this server and deploy again for a new port"
                )
                self.store.update(record.id, desired_state="stopped", last_error=message)
                raise PortUnavailable(message)
            if not process.alive(ref):
                message = (
                    f"model server {record.name!r} exited before it was ready. Last log lines "
                    f"({self._log_path(record)}):\n{process.tail_text(self._log_path(record))}"
                )
                break
            if time.monotonic() >= deadline:
                process.terminate(ref, timeout=10, force=True)
                message = (
                    f"model server {record.name!r} was not ready within the timeout, so it was "
                    f"stopped. Last log lines:\n{process.tail_text(self._log_path(record))}"
                )
                break
            time.sleep(self.poll_interval)
        self.store.update(record.id, desired_state="stopped", last_error=message[:2000])
        raise ServerStartFailed(message)

    def _stop(self, record: ServerRecord, timeout: float, force: bool) -> None:
        self.store.update(record.id, desired_state="stopped")
        if not process.terminate(_ref(record), timeout=timeout, force=force):
            raise ServerStopFailed(
                f"model server {record.name!r} (pid {record.pid}) did not stop within "
                f"{timeout:.0f}s; retry with force=True (`--force`) to kill it"
            )

    def _alive(self, record: ServerRecord) -> bool:
        return process.alive(_ref(record))

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

    def _log_path(self, record: ServerRecord) -> Path:
        return self.dir / record.id / "server.log"

    def _locked(self, server_name: str, timeout: float) -> AbstractContextManager[None]:
        return operation_lock(self._lock_path(server_name), timeout,
                              f"model server {server_name!r}")

    def _lock_path(self, server_name: str) -> Path:
        if not server_name:
            raise InvalidParams("a model server needs a name")
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(server_name.encode()).hexdigest()[:16]
        return self.dir / "locks" / f"{digest}.lock"


def _ref(record: ServerRecord) -> process.ProcessRef | None:
    if record.pid is None or record.pid_started is None:
        return None
    return process.ProcessRef(record.pid, record.pid_started)
