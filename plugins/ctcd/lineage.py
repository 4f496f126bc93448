"""From a served version back to its data: the lineage chain of one registered version.

model version (registry: aliases, the gate's decision, who approved it) -> MLflow run
(params, metrics) -> the Airflow DAG run and tasks that trained, registered and deployed it
-> the ingested partition and its snapshot -> the Great Expectations result and its Data
Docs page. Every response of a model server names the model and version it came from
(``X-Model-Version``, batch and streaming outputs store it), so any prediction leads here.

Read over MLflow's REST API with a bounded timeout (:class:`MlflowReader`), so a page that
shows the chain never hangs on a tracking server that is down: the chain then says so.
``ctcd models describe`` prints it; the deployments page in the Airflow UI links each step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ctcd.net import tls_context

APPROVAL_TAG = "ctcd.approval"
GATE_TAG = "ctcd.gate"


class MlflowUnavailable(Exception):
    """The tracking server did not answer in time (or at all)."""


class MlflowReader:
    """Small, bounded reads of an MLflow tracking server's REST API, cached for ``ttl``
    seconds (a page shows the same runs on every refresh)."""

    def __init__(self, uri: str, *, timeout: float = 1.0, ttl: float = 60.0) -> None:
        self.uri = uri.rstrip("/")
        self.timeout = timeout
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    @property
    def has_ui(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    def run(self, run_id: str) -> dict[str, Any]:
        data = self._get("/api/2.0/mlflow/runs/get", {"run_id": run_id})
        run = data.get("run") or {}
        info, body = run.get("info") or {}, run.get("data") or {}
        return {"run_id": run_id, "experiment_id": info.get("experiment_id"),
                "status": info.get("status"), "run_name": info.get("run_name"),
                "params": {p["key"]: p["value"] for p in body.get("params") or []},
                "metrics": {m["key"]: m["value"] for m in body.get("metrics") or []},
                "tags": {t["key"]: t["value"] for t in body.get("tags") or []
                         if not t["key"].startswith("mlflow.")}}

    def version(self, name: str, version: str) -> dict[str, Any]:
        data = self._get("/api/2.0/mlflow/model-versions/get",
                         {"name": name, "version": version})
        mv = data.get("model_version") or {}
        return {"name": name, "version": str(mv.get("version", version)),
                "run_id": mv.get("run_id"), "aliases": list(mv.get("aliases") or []),
                "tags": {t["key"]: t["value"] for t in mv.get("tags") or []}}

    def run_url(self, run: Mapping[str, Any]) -> str | None:
        if not self.has_ui or not run.get("experiment_id"):
            return None
        return f"{self.uri}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"

    def version_url(self, name: str, version: str) -> str | None:
        if not self.has_ui:
            return None
        return f"{self.uri}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"

    def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        if not self.has_ui:
            raise MlflowUnavailable(f"{self.uri} is not an MLflow tracking server URL")
        key = path + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return dict(hit[1])
        try:
            response = httpx.get(self.uri + path, params=dict(params), timeout=self.timeout,
                                 verify=tls_context())
        except httpx.HTTPError as err:
            raise MlflowUnavailable(f"MLflow at {self.uri} did not answer within "
                                    f"{self.timeout:g}s ({type(err).__name__})") from err
        if response.status_code != 200:
            raise MlflowUnavailable(f"MLflow at {self.uri} answered {response.status_code} "
                                    f"to {path}: {response.text[:200]}")
        data = dict(response.json())
        with self._lock:
            self._cache[key] = (time.monotonic(), data)
        return data


@dataclass(frozen=True)
class Step:
    """One link of the chain: what it is, its value, and where to see it."""

    kind: str
    title: str
    value: str
    link: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    model_name: str
    version: str
    steps: tuple[Step, ...]
    error: str | None = None  # why the chain stops short (MLflow down, version unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "error": self.error,
                "steps": [asdict(s) | {"details": dict(s.details)} for s in self.steps]}


def resolve(
    reader: MlflowReader, model_name: str, version: str, *, airflow_url: str = "",
    deployed_by: Mapping[str, str | None] | None = None, data_docs_url: Any = None,
) -> Lineage:
    """The chain of ``model_name`` version ``version``. ``airflow_url`` prefixes the links
    to Airflow's UI (``""``: paths); ``deployed_by`` is the handle's dag_id/run_id/task_id;
    ``data_docs_url(path)`` turns a local Data Docs file into a link (default ``file://``).
    """
    steps: list[Step] = []
    try:
        mv = reader.version(model_name, version)
    except MlflowUnavailable as err:
        return Lineage(model_name, version, (), f"{err}: the chain cannot be read now")
    tags = mv["tags"]
    aliases = f" ({', '.join(mv['aliases'])})" if mv["aliases"] else ""
    steps.append(Step("version", "Model version", f"{model_name} v{version}{aliases}",
                      reader.version_url(model_name, version),
                      {"gate": tags.get(GATE_TAG, "")}))
    run_id = mv.get("run_id")
    if not run_id:
        return Lineage(model_name, version, tuple(steps), "the version names no MLflow run")
    try:
        run = reader.run(run_id)
    except MlflowUnavailable as err:
        return Lineage(model_name, version, tuple(steps), str(err))
    rtags = run["tags"]
    metrics = {k: v for k, v in run["metrics"].items() if not k.startswith("champion_")}
    steps.append(Step("run", "MLflow run", run.get("run_name") or run_id, reader.run_url(run),
                      {"run_id": run_id, "params": run["params"], "metrics": metrics}))
    for what, source in (("trained by", rtags), ("registered by", tags),
                         ("deployed by", deployed_by or {})):
        step = _airflow_step(what, source, airflow_url)
        if step is not None:
            steps.append(step)
    if rtags.get("ctcd.dataset"):
        snapshot = run["params"].get("snapshot", "")
        steps.append(Step("data", "Data", f"{rtags['ctcd.dataset']} partition "
                          f"{rtags.get('ctcd.partition')} from {rtags.get('ctcd.source')}",
                          None, {"snapshot": snapshot,
                                 "window_partitions": run["params"].get("window_partitions")}))
    if rtags.get("ctcd.validation"):
        docs = rtags.get("ctcd.data_docs")
        to_url = data_docs_url or (lambda path: f"file://{path}")
        checked = rtags.get("ctcd.validation_expectations")
        steps.append(Step("validation", "Great Expectations",
                          f"{rtags['ctcd.validation']}"
                          f"{f' ({checked} expectations)' if checked else ''}",
                          to_url(docs) if docs else None,
                          {"report": rtags.get("ctcd.validation_report", ""),
                           "data_docs": docs or ""}))
    steps.append(Step("approval", "Approval", tags.get(APPROVAL_TAG)
                      or "not asked (approval was off for this run)"))
    return Lineage(model_name, version, tuple(steps))


def _airflow_step(what: str, tags: Mapping[str, str | None], airflow_url: str) -> Step | None:
    dag_id = tags.get("airflow.dag_id") or tags.get("dag_id")
    run_id = tags.get("airflow.run_id") or tags.get("run_id")
    task_id = tags.get("airflow.task_id") or tags.get("task_id")
    if not (dag_id and run_id):
        return None
    path = f"{airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    if task_id:
        path += f"/tasks/{quote(task_id, safe='')}"
    return Step("airflow", f"Airflow ({what})", f"{dag_id} / {run_id} / {task_id or '-'}",
                path, {"dag_id": dag_id, "run_id": run_id, "task_id": task_id})
