"""Starting a local model server process: its port from ``CTCD_SERVER_PORT_RANGE`` (kept
with the server across restarts), its command and environment, and the wait until it
answers ready (or the reason it cannot)."""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import filelock

from ctcd.deployers import options
from ctcd.deployers.base import DeploymentConfig, redact_uri
from ctcd.deployers.local import process
from ctcd.deployers.local.store import ServerRecord, ServerStore, utcnow
from ctcd.errors import PortUnavailable, ServerStartFailed
from ctcd.net import port_is_free
from ctcd.services.handle import ServiceStatus, probe
from ctcd.settings import Settings

log = logging.getLogger("ctcd.deployers.local.deployer")


@dataclass(frozen=True)
class Launcher:
    settings: Settings
    store: ServerStore
    dir: Path
    server_command: Sequence[str]
    poll_interval: float

    def create(self, config: DeploymentConfig) -> ServerRecord:
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

    def spawn(self, record: ServerRecord, config: DeploymentConfig) -> None:
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
        env["MLFLOW_TRACKING_URI"] = env["CTCD_SERVER_TRACKING_URI"] = self.tracking_uri(config)
        env["CTCD_SERVER_ADMIN_TOKEN"] = record.admin_token
        env["CTCD_HOME"] = str(self.settings.home)
        log_path = self.log_path(record)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as fh:
            fh.write(f"--- {utcnow()} starting {config.model_version} ({config.model_uri})\n")
        ref = process.spawn(argv, env=env, log_path=log_path)
        self.store.update(record.id, pid=ref.pid, pid_started=ref.started, last_error=None)
        log.info("started model server %s (pid %s) on %s", record.name, ref.pid, record.endpoint)

    def complete(self, config: DeploymentConfig) -> DeploymentConfig:
        """``config`` as it will be recorded: with everything a restart from another process
        needs (tracking server, server options, whether a token is required)."""
        return replace(
            config,
            tracking_uri=config.tracking_uri or self.settings.tracking_uri(),
            server_options=config.server_options or options.options_from_env(os.environ),
            requires_token=config.requires_token or bool(os.environ.get(options.TOKEN_VARIABLE)),
        )

    def tracking_uri(self, config: DeploymentConfig) -> str:
        """The tracking server the record names. The caller's own URI is used instead only
        when it names that same server (it may carry credentials the record must not)."""
        live = self.settings.tracking_uri()
        if config.tracking_uri is None or redact_uri(live) == config.tracking_uri:
            return live
        return config.tracking_uri

    def wait_ready(self, record: ServerRecord, deadline: float) -> None:
        """Block until the server answers ready; stop it and fail if it cannot."""
        record = self.store.resolve(record.id)
        ref = process_ref(record)
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
                    f"({self.log_path(record)}):\n{process.tail_text(self.log_path(record))}"
                )
                break
            if time.monotonic() >= deadline:
                process.terminate(ref, timeout=10, force=True)
                message = (
                    f"model server {record.name!r} was not ready within the timeout, so it was "
                    f"stopped. Last log lines:\n{process.tail_text(self.log_path(record))}"
                )
                break
            time.sleep(self.poll_interval)
        self.store.update(record.id, desired_state="stopped", last_error=message[:2000])
        raise ServerStartFailed(message)

    def log_path(self, record: ServerRecord) -> Path:
        return self.dir / record.id / "server.log"


def process_ref(record: ServerRecord) -> process.ProcessRef | None:
    if record.pid is None or record.pid_started is None:
        return None
    return process.ProcessRef(record.pid, record.pid_started)
