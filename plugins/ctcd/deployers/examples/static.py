"""A minimal user-supplied backend: model servers someone else runs, registered by URL.

Enable it with ``CTCD_DEPLOYER=ctcd.deployers.examples.static:StaticDeployer`` and list the
servers in ``CTCD_STATIC_SERVERS`` as JSON, ``{"server name": "http://host:port", ...}``.
``deploy_model`` loads the new version into the named server through its admin API with the
same strategies as the ``local`` backend; lifecycle calls that need process control refuse
clearly. Copy this file as the start of a backend for your own platform: a backend is any
class with the methods of :class:`ctcd.deployers.ModelDeployer`, constructed with
``settings=``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from ctcd.deployers.admin import AdminClient
from ctcd.deployers.base import DEFAULT_TIMEOUT, DeploymentConfig
from ctcd.deployers.strategies import Rollout, StrategySpec, resolve_strategy
from ctcd.errors import DeploymentError, ModelServerNotFound, ModelServerUnavailable
from ctcd.services import ServiceHandle, ServiceStatus
from ctcd.settings import Settings


class StaticDeployer:
    name = "ctcd.deployers.examples.static:StaticDeployer"

    def __init__(self, settings: Settings, servers: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.servers = servers or json.loads(os.environ.get("CTCD_STATIC_SERVERS", "{}"))
        self.admin_token = os.environ.get("CTCD_STATIC_ADMIN_TOKEN") or None

    def deploy_model(
        self, config: DeploymentConfig, strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ServiceHandle:
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
        dag_id: str | None = None, run_id: str | None = None, task_id: str | None = None,
        model_name: str | None = None, model_version: str | None = None,
        model_uri: str | None = None,
    ) -> list[ServiceHandle]:
        found = []
        for name, endpoint in self.servers.items():
            with AdminClient(endpoint, token=self.admin_token, timeout=5) as admin:
                try:
                    serving = admin.versions()
                except (DeploymentError, ModelServerUnavailable):
                    serving = {}
            main = max(serving.values(), key=lambda v: v.weight, default=None)
            config = DeploymentConfig(
                model_name=model_name or name, server=name,
                model_uri=main.model_uri if main else "unknown",
                model_version=main.version if main else "unknown",
            )
            handle = self._handle(name, config, None)
            wanted = {"service_id": service_id, "model_version": model_version,
                      "model_uri": model_uri, "dag_id": dag_id, "run_id": run_id,
                      "task_id": task_id}
            if any(v is not None and getattr(handle, k) != v for k, v in wanted.items()):
                continue
            if running and handle.status() is not ServiceStatus.RUNNING:
                continue
            found.append(handle)
        return found

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
