"""``ServiceHandle``: a small, frozen, versioned value naming one deployed model server.

It travels between tasks through XCom (Airflow 3 calls ``serialize()`` and
``deserialize(data, version)``; the class is allow-listed by ``ctcd.airflow_config``). It
holds identifiers, the endpoint and lineage, never a client or a secret, and it never trusts
stored state: :meth:`status` and :meth:`is_running` ask the server every time.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias
from urllib.parse import quote

import httpx

from ctcd.errors import ModelServerUnavailable, PredictionFailed
from ctcd.net import tls_context

if TYPE_CHECKING:
    import pandas as pd

PredictInput: TypeAlias = (
    "pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]"
)


class ServiceStatus(enum.StrEnum):
    """Observed state of a model server, as just checked over HTTP."""

    RUNNING = "running"  # answers and reports the model ready
    UNHEALTHY = "unhealthy"  # answers, but not ready for this model
    UNREACHABLE = "unreachable"  # nothing answers at the endpoint


@dataclass(frozen=True, kw_only=True)
class ServiceHandle:
    __version__: ClassVar[int] = 1

    service_id: str
    backend: str
    server_name: str
    model_name: str
    model_version: str
    model_uri: str
    endpoint: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    mlflow_run_id: str | None = None
    strategy: str | None = None
    deployed_at: str | None = None

    # -- XCom protocol ---------------------------------------------------------------------

    def serialize(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def deserialize(data: dict[str, Any], version: int) -> ServiceHandle:
        if version > ServiceHandle.__version__:
            raise TypeError(
                f"ServiceHandle version {version} is newer than this code understands "
                f"({ServiceHandle.__version__}); upgrade ctcd on this worker"
            )
        known = {f.name for f in fields(ServiceHandle)}
        return ServiceHandle(**{k: v for k, v in data.items() if k in known})

    # -- observed state --------------------------------------------------------------------

    def status(self, timeout: float = 2.0) -> ServiceStatus:
        """Ask the server now; stored state is never trusted."""
        return probe(self.endpoint, self.model_name, timeout=timeout)

    def is_running(self, timeout: float = 2.0) -> bool:
        return self.status(timeout=timeout) is ServiceStatus.RUNNING

    # -- use -------------------------------------------------------------------------------

    def predict(
        self, data: PredictInput, *, timeout: float = 30.0, token: str | None = None
    ) -> list[Any]:
        """Score rows on the server (MLflow ``dataframe_split``); returns the predictions."""
        import pandas as pd  # heavy: imported only when scoring

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        body = '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}"
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = httpx.post(
                f"{self.endpoint}/invocations", content=body, headers=headers, timeout=timeout
            )
        except httpx.TransportError as err:
            raise ModelServerUnavailable(
                f"model server {self.server_name!r} at {self.endpoint} did not answer ({err}); "
                f"check it with `ctcd models describe {self.service_id}`"
            ) from err
        if response.status_code >= 400:
            raise PredictionFailed(
                f"model server {self.server_name!r} answered {response.status_code}: "
                f"{_error_text(response)}",
                status_code=response.status_code if response.status_code < 500 else 502,
            )
        predictions = response.json()["predictions"]
        return list(predictions)


def probe(endpoint: str, model_name: str, *, timeout: float = 2.0) -> ServiceStatus:
    """One check that ``endpoint`` is ready and serves ``model_name`` (KServe V2 routes:
    server readiness, then model metadata, so another server on a reused port never reads as
    this one)."""
    try:
        with httpx.Client(base_url=endpoint, timeout=timeout, verify=tls_context()) as client:
            ready = client.get("/v2/health/ready")
            if ready.status_code != 200:
                return ServiceStatus.UNHEALTHY
            model = client.get(f"/v2/models/{quote(model_name, safe='')}")
    except httpx.TransportError:
        return ServiceStatus.UNREACHABLE
    return ServiceStatus.RUNNING if model.status_code == 200 else ServiceStatus.UNHEALTHY


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except json.JSONDecodeError:
        return response.text[:500]
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if key in payload:
                return str(payload[key])
    return str(payload)[:500]


__all__ = ["PredictInput", "ServiceHandle", "ServiceStatus", "probe"]
