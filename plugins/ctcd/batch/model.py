"""The model a scoring job uses: a registry reference resolved to one version, loaded the
way the model server loads it (``ctcd.serving.model``), so batch, streaming and real-time
answers are the same.

A reference is ``name`` (the ``champion``), ``name@alias``, ``name/version``, or the same
as a ``models:/`` URI. The alias is resolved once, to a version, before loading: every
prediction then records the exact version that made it, even if the alias moves meanwhile.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from ctcd.errors import InvalidParams
from ctcd.serving.compiled import batch_threads_by_env, threads_by_env
from ctcd.serving.errors import ModelLoadError, ServingError
from ctcd.serving.model import LoadedModel, load
from ctcd.serving.schema import InputSchema

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "champion"
_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@\s]+)(?:/(?P<version>\d+)|@(?P<alias>[^/@\s]+))?/?$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model named by version or by alias (``alias`` None: pinned version)."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REF.match(text.strip())
        if match is None:
            raise InvalidParams(
                f"model {text!r} is not a registered model reference; use NAME (its "
                "champion), NAME@ALIAS, NAME/VERSION, or models:/NAME@ALIAS, models:/NAME/VERSION"
            )
        version, alias = match["version"], match["alias"]
        return cls(match["name"], version, alias if version or alias else DEFAULT_ALIAS)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else self.pinned_uri

    @property
    def pinned_uri(self) -> str:
        if self.version is None:
            raise InvalidParams(f"{self.name}@{self.alias} is not resolved to a version yet")
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclass
class ScoringModel:
    """One loaded, warmed version and where it came from."""

    name: str
    version: str
    model: LoadedModel

    @property
    def schema(self) -> InputSchema:
        schema = self.model.schema
        if schema is None or not schema.columns:
            raise InvalidParams(
                f"model {self.name} version {self.version} has no column signature; batch and "
                "streaming scoring check every row against one (log the model with a "
                "signature, as continuous_training does)"
            )
        return schema


def resolve_version(ref: ModelRef, tracking_uri: str) -> str:
    """The version ``ref`` names now (an alias is looked up in the registry)."""
    if ref.alias is None:
        if ref.version is None:
            raise InvalidParams(f"model reference {ref} names neither a version nor an alias")
        return ref.version
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return _alias_over_rest(ref, tracking_uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            ref.name, ref.alias)
    except MlflowException as err:
        raise ModelLoadError(ref.uri, err.message) from err
    return str(found.version)


def load_version(name: str, version: str, *, batch: bool = False) -> ScoringModel:
    """Load and warm ``models:/name/version`` (MLFLOW_TRACKING_URI names the registry, as for
    the model server); ModelLoadError says why it could not be. ``batch``: the model scores
    files in this process (large chunks), so a compiled model runs on every core
    (``CTCD_COMPILED_BATCH_THREADS``) instead of the streaming scorer's one thread
    (``CTCD_COMPILED_THREADS``), and its tree library answers when it has one."""
    uri = f"models:/{name}/{version}"
    threads = batch_threads_by_env() if batch else threads_by_env()
    model = load(uri, compiled_threads=threads, trees=batch)
    try:
        model.warm()
    except ServingError as err:
        raise ModelLoadError(uri, f"warm-up prediction failed: {err.message}") from err
    except (ValueError, TypeError, RuntimeError, AttributeError) as err:
        raise ModelLoadError(uri, f"warm-up prediction failed: {type(err).__name__}: "
                             f"{err}") from err
    view = model.compiled_view()
    on = f" on {threads or 'one per core'} thread(s)" if model.compiled is not None else ""
    log.info("%s answers through %s%s (compiled model: %s%s)", uri, view["runtime"], on,
             view.get("compiled", "none"),
             f"; {view['compiled_reason']}" if view.get("compiled_reason") else "")
    return ScoringModel(name, version, model)


def _alias_over_rest(ref: ModelRef, tracking_uri: str) -> str:
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias"
    try:
        response = httpx.get(url, params={"name": ref.name, "alias": ref.alias}, timeout=30,
                             headers=_auth_headers())
    except httpx.HTTPError as err:
        raise ModelLoadError(ref.uri, f"tracking server {tracking_uri} unreachable: {err}") from err
    if response.status_code != 200:
        try:
            reason = str(response.json().get("message", response.text))
        except ValueError:
            reason = response.text
        raise ModelLoadError(ref.uri, f"{response.status_code} from the tracking server: "
                             f"{reason[:300]}")
    return str(response.json()["model_version"]["version"])


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}
