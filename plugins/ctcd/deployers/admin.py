"""Client for a ctcd model server's admin API (versions loaded, traffic weights).

The server holds several versions of one model at once; every strategy is a sequence of
these calls. Errors become :class:`ctcd.errors.DeploymentError` subclasses naming the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ctcd.errors import DeploymentError, ModelServerUnavailable, VersionRejected
from ctcd.net import tls_context


@dataclass(frozen=True)
class VersionStats:
    version: str
    model_uri: str
    weight: float
    state: str
    requests: int
    errors: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    runtime: str = ""  # what answers: onnxruntime (compiled) or the model's flavor
    compiled: str = ""  # verified, pending, slower, off, none, failed, refused
    compiled_reason: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionStats:
        return cls(
            version=str(data["version"]),
            model_uri=str(data.get("model_uri", "")),
            weight=float(data.get("weight", 0.0)),
            state=str(data.get("state", "ready")),
            requests=int(data.get("requests", 0)),
            errors=int(data.get("errors", 0)),
            latency_ms_p50=_float_or_none(data.get("latency_ms_p50")),
            latency_ms_p99=_float_or_none(data.get("latency_ms_p99")),
            runtime=str(data.get("runtime", "")),
            compiled=str(data.get("compiled", "")),
            compiled_reason=str(data.get("compiled_reason", "")),
        )


class AdminClient:
    """One model server's admin API. ``token`` is the server's admin bearer token."""

    def __init__(self, endpoint: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.endpoint = endpoint
        self._client = httpx.Client(base_url=endpoint, headers=headers, timeout=timeout,
                                    verify=tls_context())

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def versions(self) -> dict[str, VersionStats]:
        data = self._request("GET", "/admin/versions").json()
        return {str(v["version"]): VersionStats.from_json(v) for v in data["versions"]}

    def serving(self) -> dict[str, float]:
        """Versions that receive traffic now, with their weights."""
        return {v: s.weight for v, s in self.versions().items() if s.weight > 0}

    def load(self, model_uri: str, version: str, *, timeout: float) -> None:
        """Load and warm ``version``; :class:`VersionRejected` if the server refuses it."""
        response = self._request(
            "POST",
            "/admin/versions",
            json={"model_uri": model_uri, "version": version},
            timeout=timeout,
            check=False,
        )
        if response.status_code in (200, 201):
            return
        raise VersionRejected(
            f"model server at {self.endpoint} could not load version {version} from "
            f"{model_uri}: {_error_text(response)}. The previous version keeps serving."
        )

    def version_ready(self, model_name: str, version: str) -> bool:
        """The V2 readiness route of one version (answers without routing by weight)."""
        path = f"/v2/models/{quote(model_name, safe='')}/versions/{quote(version, safe='')}/ready"
        return self._request("GET", path, check=False).status_code == 200

    def set_traffic(self, weights: dict[str, float]) -> None:
        self._request("PUT", "/admin/traffic", json={"weights": weights})

    def unload(self, version: str) -> None:
        response = self._request("DELETE", f"/admin/versions/{version}", check=False)
        if response.status_code in (200, 202, 204, 404):
            return
        _raise_for(response, f"unload version {version}")

    # -- shadow: a version with no traffic, sent copies of live requests (GET/PUT/DELETE
    # /admin/shadow); the state is the server's comparison, or None when none runs
    def start_shadow(self, plan: dict[str, Any]) -> dict[str, Any] | None:
        response = self._request("PUT", "/admin/shadow", json=plan, check=False)
        if response.status_code == 200:
            return _shadow_of(response)
        raise VersionRejected(
            f"model server at {self.endpoint} refused to shadow version "
            f"{plan.get('version')}: {_error_text(response)}. The previous version keeps "
            "serving.")

    def shadow_state(self, samples: int = 20) -> dict[str, Any] | None:
        return _shadow_of(self._request("GET", f"/admin/shadow?samples={samples}"))

    def stop_shadow(self) -> dict[str, Any] | None:
        return _shadow_of(self._request("DELETE", "/admin/shadow"))

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> httpx.Response:
        kwargs: dict[str, Any] = {"json": json} if json is not None else {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise ModelServerUnavailable(
                f"model server admin API at {self.endpoint} did not answer {method} {path}: {err}"
            ) from err
        if check and response.status_code >= 400:
            _raise_for(response, f"{method} {path}")
        return response


def _raise_for(response: httpx.Response, what: str) -> None:
    raise DeploymentError(
        f"model server admin API refused to {what}: {response.status_code} {_error_text(response)}"
    )


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    return str(payload)[:500]


def _shadow_of(response: httpx.Response) -> dict[str, Any] | None:
    shadow = response.json().get("shadow")
    return shadow if isinstance(shadow, dict) else None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
