"""A minimal user-supplied backend: model servers someone else runs, registered by URL.

Enable it with ``CTCD_DEPLOYER=ctcd.deployers.examples.static:StaticDeployer`` and list the
servers in ``CTCD_STATIC_SERVERS`` as JSON, ``{"server name": "http://host:port", ...}``; a
server's name is the name of the model it serves (one server per model). ``deploy_model``
loads the new version into the named server through its admin API with the same strategies
as the ``local`` backend; lifecycle calls that need process control refuse clearly.

Copy this file as the start of a backend for your own platform: a backend is any class
with the methods of :class:`ctcd.deployers.ModelDeployer` (read its docstrings in
``ctcd/deployers/base.py``), constructed with ``settings=``. Optional capabilities such as
:class:`ctcd.deployers.SupportsRollback` are more methods; this one has none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.deployers.base import DEFAULT_TIMEOUT, DeploymentConfig, ServerDescription
from ctcd.deployers.strategies import Rollout, StrategySpec, resolve_strategy
from ctcd.errors import DeploymentError, ModelServerNotFound, ModelServerUnavailable
from ctcd.services import ServiceHandle, ServiceStatus, probe
from ctcd.settings import Settings

if TYPE_CHECKING:
    from ctcd.deployers.base import ModelDeployer


class StaticDeployer:
    name = "ctcd.deployers.examples.static:StaticDeployer"

    def __init__(self, settings: Settings, servers: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.servers = servers or json.loads(os.environ.get("CTCD_STATIC_SERVERS", "{}"))
        self.admin_token = os.environ.get("CTCD_STATIC_ADMIN_TOKEN") or None

    def deploy_model(
        self, config: DeploymentConfig, strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT, *, wait: bool = True,
    ) -> ServiceHandle:
        # ``wait`` changes nothing here: these servers are always running, never started.
        endpoint = self._endpoint(config.server_name)
        plan = resolve_strategy(strategy)
        with AdminClient(endpoint, token=self.admin_token) as admin:
            if admin.serving() != {config.model_version: 1.0}:
                plan.run(Rollout(admin=admin, model_name=config.model_name,
                                 model_uri=config.model_uri, version=config.model_version,
                                 deadline=time.monotonic() + timeout))
        return self._handle(config.server_name, config, plan.name)

    def find_model_server(
        self, *, running: bool = False, service_id: str | None = None,
        server_name: str | None = None, dag_id: str | None = None, run_id: str | None = None,
        task_id: str | None = None, model_name: str | None = None,
        model_version: str | None = None, model_uri: str | None = None,
    ) -> list[ServiceHandle]:
        wanted = {"service_id": service_id, "server_name": server_name,
                  "model_name": model_name, "model_version": model_version,
                  "model_uri": model_uri, "dag_id": dag_id, "run_id": run_id,
                  "task_id": task_id}
        found = []
        for name in self.servers:
            main = max(self._versions(name), key=lambda v: v.weight, default=None)
            config = DeploymentConfig(
                model_name=name, server=name,
                model_uri=main.model_uri if main else "unknown",
                model_version=main.version if main else "unknown",
            )
            handle = self._handle(name, config, None)
            if any(v is not None and getattr(handle, k) != v for k, v in wanted.items()):
                continue
            if running and handle.status() is not ServiceStatus.RUNNING:
                continue
            found.append(handle)
        return found

    def status(self, service_id: str) -> ServiceStatus:
        name = self._name(service_id)
        return probe(self._endpoint(name), name)

    def describe_model_server(self, service_id: str) -> ServerDescription:
        [handle] = self.find_model_server(service_id=f"static:{self._name(service_id)}")
        return ServerDescription(
            handle=handle, status=handle.status(), versions=self._versions(handle.server_name),
            details={"managed_by": "someone else (CTCD_STATIC_SERVERS)"},
        )

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle:
        raise DeploymentError(f"{service_id} is run by someone else; start it there")

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        raise DeploymentError(f"{service_id} is run by someone else; stop it there")

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None:
        raise DeploymentError(f"{service_id} is run by someone else; remove it from "
                              "CTCD_STATIC_SERVERS instead")

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        return iter(())

    def _name(self, service_id: str) -> str:
        name = service_id.removeprefix("static:")
        self._endpoint(name)
        return name

    def _versions(self, server: str) -> tuple[VersionStats, ...]:
        with AdminClient(self._endpoint(server), token=self.admin_token, timeout=5) as admin:
            try:
                return tuple(admin.versions().values())
            except (DeploymentError, ModelServerUnavailable):
                return ()

    def _endpoint(self, server: str) -> str:
        try:
            return self.servers[server]
        except KeyError:
            raise ModelServerNotFound(f"server {server!r} in CTCD_STATIC_SERVERS") from None

    def _handle(self, server: str, config: DeploymentConfig, strategy: str | None) -> ServiceHandle:
        return ServiceHandle(
            service_id=f"static:{server}", backend=self.name, server_name=server,
            model_name=config.model_name, model_version=config.model_version,
            model_uri=config.model_uri, endpoint=self._endpoint(server),
            dag_id=config.dag_id, run_id=config.run_id, task_id=config.task_id,
            mlflow_run_id=config.mlflow_run_id, strategy=strategy,
            deployed_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )


if TYPE_CHECKING:  # mypy checks this backend against the contract
    _contract: type[ModelDeployer] = StaticDeployer
