"""Fetch a model's directory from an MLflow tracking server over its REST API.

Importing mlflow costs seconds, most of a cold start. For the common deployment (an
``http(s)`` tracking server, ``models:/name/version``, ``models:/name@alias`` or
``runs:/<id>/<path>`` URIs, artifacts on local disk or proxied by the server as
``mlflow-artifacts:``) the few REST calls needed are made here with httpx. For anything
else :func:`fetch` returns None and the caller uses ``mlflow.artifacts``, which knows
every store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from ctcd.serving.errors import ModelLoadError

if TYPE_CHECKING:  # imported when a model is fetched: a local directory needs no httpx
    import httpx

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_LOGGED = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)/?$")
_RUNS = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")
_PROXY = "/api/2.0/mlflow-artifacts/artifacts"


def local_model_dir(model_uri: str) -> Path | None:
    """The directory of a model given as a local path or file: URI, if it is one."""
    parsed = urlparse(model_uri)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path) if parsed.scheme else model_uri)
    return path if (path / "MLmodel").is_file() else None


def fetch(model_uri: str, dst: Path, tracking_uri: str | None = None) -> Path | None:
    """Download the model at ``model_uri`` into ``dst`` and return its directory, or None
    when this URI / store needs mlflow itself. Raises ModelLoadError when the server says
    the model does not exist."""
    local = local_model_dir(model_uri)
    if local is not None:
        return local
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return None
    import httpx

    with httpx.Client(base_url=tracking_uri.rstrip("/"), headers=_auth_headers(),
                      auth=_basic_auth(), timeout=60) as client:
        artifact_uri = _artifact_uri(client, model_uri)
        if artifact_uri is None:
            return None
        parsed = urlparse(artifact_uri)
        if parsed.scheme in ("", "file"):
            path = Path(unquote(parsed.path))
            return path if (path / "MLmodel").is_file() else None
        if parsed.scheme != "mlflow-artifacts" or parsed.netloc:
            return None
        root = parsed.path.lstrip("/")
        _download_tree(client, model_uri, root, dst)
        return dst


def _artifact_uri(client: httpx.Client, model_uri: str) -> str | None:
    if match := _MODELS.match(model_uri):
        name, version = match["name"], match["version"]
        if version is None:
            body = _get(client, model_uri, "/api/2.0/mlflow/registered-models/alias",
                        {"name": name, "alias": match["alias"]})
            version = body["model_version"]["version"]
        body = _get(client, model_uri, "/api/2.0/mlflow/model-versions/get-download-uri",
                    {"name": name, "version": version})
        uri = body["artifact_uri"]
        return _artifact_uri(client, uri) if uri.startswith("models:/") else uri
    if match := _LOGGED.match(model_uri):
        body = _get(client, model_uri, f"/api/2.0/mlflow/logged-models/{match['id']}", {})
        return str(body["model"]["info"]["artifact_uri"])
    if match := _RUNS.match(model_uri):
        body = _get(client, model_uri, "/api/2.0/mlflow/runs/get", {"run_id": match["run"]})
        return f"{body['run']['info']['artifact_uri'].rstrip('/')}/{match['path']}"
    return None


def _get(client: httpx.Client, model_uri: str, path: str, params: dict[str, str]) -> dict:
    import httpx

    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as err:
        raise ModelLoadError(model_uri, f"tracking server unreachable: {err}") from err
    if response.status_code != 200:
        try:
            reason = response.json().get("message", response.text)
        except ValueError:
            reason = response.text
        raise ModelLoadError(model_uri, f"{response.status_code} from the tracking server: "
                             f"{reason[:300]}")
    return dict(response.json())


def _download_tree(client: httpx.Client, model_uri: str, root: str, dst: Path) -> None:
    import httpx

    listing = _get(client, model_uri, _PROXY, {"path": root}).get("files", [])
    if not listing:
        raise ModelLoadError(model_uri, f"no artifacts at mlflow-artifacts:/{root}")
    dst.mkdir(parents=True, exist_ok=True)
    for entry in listing:
        name = entry["path"]
        if "/" in name or name in ("", ".", ".."):
            raise ModelLoadError(model_uri, f"unsafe artifact path {name!r}")
        if entry.get("is_dir"):
            _download_tree(client, model_uri, f"{root}/{name}", dst / name)
            continue
        try:
            with client.stream("GET", f"{_PROXY}/{root}/{name}") as response:
                if response.status_code != 200:
                    raise ModelLoadError(model_uri, f"{response.status_code} downloading "
                                         f"{root}/{name}")
                with open(dst / name, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as err:
            raise ModelLoadError(model_uri, f"download of {name} failed: {err}") from err


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _basic_auth() -> tuple[str, str] | None:
    user, password = (os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    return (user, password) if user and password else None
