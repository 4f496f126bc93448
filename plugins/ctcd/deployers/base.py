"""The model-deployer extension point: a ``Protocol`` and the config it deploys.

A backend is any class with these methods; it is chosen by ``CTCD_DEPLOYER`` (``local`` or a
dotted path ``package.module:Class``, see :func:`ctcd.deployers.get_deployer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ctcd.errors import InvalidParams

if TYPE_CHECKING:
    from ctcd.deployers.strategies import StrategySpec
    from ctcd.services import ServiceHandle

DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """What to serve and where it came from (lineage). Holds no secrets.

    ``server`` names the model server to deploy into; by default there is one server per
    ``model_name``. Give another name only to run a second, separate server for one model.
    """

    model_name: str
    model_uri: str
    model_version: str
    mlflow_run_id: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    server: str | None = None
    workers: int = 1
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model_name", "model_uri", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidParams(f"DeploymentConfig.{name} must be a non-empty string")
        if self.workers < 1:
            raise InvalidParams("DeploymentConfig.workers must be at least 1")

    @property
    def server_name(self) -> str:
        return self.server or self.model_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentConfig:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@runtime_checkable
class ModelDeployer(Protocol):
    """Deploys models to long-running model servers and keeps a registry of them.

    Contract every backend keeps:

    * ``deploy_model`` updates the server already serving ``config.server_name`` in place
      (no second server), following ``strategy``; deploying the version already serving
      changes nothing. On failure the previous version keeps serving and a
      :class:`ctcd.errors.DeploymentError` says why.
    * ``find_model_server`` is a pure query: it writes nothing, and ``running=True`` means
      "just checked and answering", never "recorded as started".
    * ``service_id`` is stable for the life of a server, across stop/start.
    """

    name: str

    def deploy_model(
        self,
        config: DeploymentConfig,
        strategy: StrategySpec = "replace",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ServiceHandle: ...

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
    ) -> list[ServiceHandle]: ...

    def start_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT
    ) -> ServiceHandle: ...

    def stop_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None: ...

    def delete_model_server(
        self, service_id: str, timeout: float = DEFAULT_TIMEOUT, force: bool = False
    ) -> None: ...

    def get_logs(
        self, service_id: str, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]: ...
