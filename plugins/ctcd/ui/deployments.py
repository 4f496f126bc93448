"""The rows of the deployments page: every model server and streaming scorer the configured
deployer knows, observed now, each within a time budget.

Everything goes through the deployer contract (``find_model_server``,
``describe_model_server``, ``find_scorers``). Each server is described on its own thread; a
server that does not answer within ``budget`` seconds (hung, or a slow network) gets a row
that says so, and the page is rendered anyway: one slow or dead server never holds the page.
MLflow is read the same way (:class:`ctcd.lineage.MlflowReader`): when it is down the rows
say so instead of their links.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ctcd.deployers.base import ModelDeployer, ServerDescription
from ctcd.deployers.scorers import ScorerInfo, SupportsScorers
from ctcd.deployers.shadow import summarize
from ctcd.deployers.traffic import candidate
from ctcd.errors import CtcdError
from ctcd.lineage import MlflowReader
from ctcd.services.handle import ServiceHandle

log = logging.getLogger(__name__)

# Threads that describe servers; a hung server's describe keeps its thread until the
# backend's own timeouts end it, so the pool is larger than one page's rows.
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ctcd-ui")


@dataclass(frozen=True)
class VersionRow:
    version: str
    weight: float
    state: str
    requests: int
    errors: int
    p50: float | None
    p99: float | None
    model_uri: str

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Figures:
    """A shadow's comparison over one window, or over the whole shadow (``label``)."""

    label: str
    mirrored: int
    dropped: int
    answered: int
    errors: int
    timeouts: int
    error_rate: float | None
    agreement: float | None
    difference: Mapping[str, float | None]  # mean, p95, max of the absolute difference
    live_ms: Mapping[str, float | None]  # p50, p95, p99 of the live version
    shadow_ms: Mapping[str, float | None]  # p50, p95, p99 of the shadow, same requests
    disagreeing: int

    @classmethod
    def of(cls, label: str, c: Mapping[str, Any]) -> Figures:
        latency = c.get("latency_ms") or {}
        return cls(label=label, **{k: int(c.get(k) or 0) for k in (
            "mirrored", "dropped", "answered", "errors", "timeouts")},
            error_rate=c.get("error_rate"),
            agreement=(c.get("labels") or {}).get("agreement"),
            difference=((c.get("numbers") or {}).get("abs_difference") or {}),
            live_ms=latency.get("live") or {}, shadow_ms=latency.get("shadow") or {},
            disagreeing=int(c.get("disagreeing_requests") or 0))


@dataclass(frozen=True)
class ShadowView:
    """A shadow in progress as the server reports it (``GET /admin/shadow`` through the
    deployer's ``describe_model_server``): which version shadows which, how much traffic is
    copied, and the comparison, whole and per window (newest first)."""

    version: str
    live_versions: tuple[str, ...]
    mirror_percent: float
    started_at: str
    window_seconds: float
    summary: str
    cumulative: Figures
    windows: tuple[Figures, ...]

    @classmethod
    def of(cls, state: Mapping[str, Any]) -> ShadowView:
        cumulative = state.get("cumulative") or {}
        return cls(version=str(state.get("version")),
                   live_versions=tuple(str(v) for v in state.get("live_versions") or ()),
                   mirror_percent=float(state.get("mirror_percent") or 0.0),
                   started_at=str(state.get("started_at") or ""),
                   window_seconds=float(state.get("window_seconds") or 0.0),
                   summary=summarize(cumulative),
                   cumulative=Figures.of("whole shadow", cumulative),
                   windows=tuple(Figures.of(f"{w.get('start', '')[11:19]}-"
                                            f"{w.get('end', '')[11:19]}", w)
                                 for w in reversed(state.get("windows") or [])))


@dataclass(frozen=True)
class Row:
    """One model server (``kind="server"``) or streaming scorer (``kind="scorer"``)."""

    kind: str
    id: str
    name: str
    model_name: str
    status: str  # running | unhealthy | unreachable | stopped | no answer | ...
    health: str  # what the status means, in words
    desired_state: str | None = None
    endpoint: str = ""
    serving_version: str = ""
    strategy: str | None = None
    strategy_state: str = ""
    versions: tuple[VersionRow, ...] = ()
    shadow: ShadowView | None = None
    handle: ServiceHandle | None = None
    description: ServerDescription | None = None
    scorer: ScorerInfo | None = None
    mlflow: Mapping[str, Any] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "running"


def rows(deployer: ModelDeployer, reader: MlflowReader, *, budget: float = 0.6
         ) -> tuple[list[Row], list[str]]:
    """Every server and scorer, and the problems met (a backend or MLflow that did not
    answer), within about ``budget`` seconds whatever the servers do."""
    deadline = time.monotonic() + budget
    problems: list[str] = []
    try:
        handles = deployer.find_model_server()
    except CtcdError as err:
        return [], [f"the deployer {deployer.name!r} could not list its servers: {err.message}"]
    described = {h.service_id: _POOL.submit(deployer.describe_model_server, h.service_id)
                 for h in handles}
    scorers: Future[list[ScorerInfo]] | None = None
    if isinstance(deployer, SupportsScorers):
        scorers = _POOL.submit(deployer.find_scorers)
    mlflow = {h.service_id: _POOL.submit(_mlflow_facts, reader, h) for h in handles}
    pending: list[Future[Any]] = [*described.values(), *mlflow.values()]
    if scorers is not None:
        pending.append(scorers)
    wait(pending, timeout=max(deadline - time.monotonic(), 0.05))
    facts: dict[str, dict[str, Any]] = {}
    for service_id, future in mlflow.items():
        if not future.done():
            problems.append(f"MLflow at {reader.uri} did not answer within {budget:g}s: "
                            "some links are left out")
            break
        error = future.exception()
        if error is not None:
            problems.append(f"{error}: MLflow links are left out")
            break
        facts[service_id] = future.result()
    found = [_server_row(h, described[h.service_id], budget, facts.get(h.service_id, {}))
             for h in handles]
    if scorers is not None:
        if scorers.done() and scorers.exception() is None:
            found += [_scorer_row(s) for s in scorers.result()]
        else:
            error = scorers.exception() if scorers.done() else None
            problems.append(f"streaming scorers could not be listed within {budget:g}s"
                            f"{f': {error}' if error else ''}")
    return found, problems


def describe_one(deployer: ModelDeployer, reader: MlflowReader, handle: ServiceHandle, *,
                 budget: float = 2.0) -> tuple[Row, str | None]:
    """One server's row, and why its MLflow facts are missing (if they are)."""
    future = _POOL.submit(deployer.describe_model_server, handle.service_id)
    mlflow = _POOL.submit(_mlflow_facts, reader, handle)
    both: list[Future[Any]] = [future, mlflow]
    wait(both, timeout=budget)
    facts, problem = {}, None
    if not mlflow.done():
        problem = f"MLflow at {reader.uri} did not answer within {budget:g}s"
    elif mlflow.exception() is not None:
        problem = str(mlflow.exception())
    else:
        facts = mlflow.result()
    return _server_row(handle, future, budget, facts), problem


def _server_row(handle: ServiceHandle, future: Future[ServerDescription], budget: float,
                facts: Mapping[str, Any]) -> Row:
    base: dict[str, Any] = {"kind": "server", "id": handle.service_id,
                            "name": handle.server_name,
            "model_name": handle.model_name, "endpoint": handle.endpoint,
            "serving_version": handle.model_version, "strategy": handle.strategy,
            "handle": handle, "mlflow": facts}
    if not future.done():
        return Row(status="no answer", health=f"did not answer within {budget:g}s "
                   "(hung or overloaded); the rest of the page did not wait", **base)
    error = future.exception()
    if error is not None:
        message = error.message if isinstance(error, CtcdError) else repr(error)
        return Row(status="error", health=f"the deployer could not describe it: {message}",
                   **base)
    described = future.result()
    versions = tuple(VersionRow(v.version, v.weight, v.state, v.requests, v.errors,
                                v.latency_ms_p50, v.latency_ms_p99, v.model_uri)
                     for v in described.versions)
    status = described.status.value
    if described.desired_state == "stopped" and status == "unreachable":
        status = "stopped"
    shadow = ShadowView.of(described.shadow) if described.shadow is not None else None
    return Row(status=status, health=_health(status, described), versions=versions,
               shadow=shadow,
               desired_state=described.desired_state, description=described,
               strategy_state=strategy_state(described), last_error=described.last_error,
               **base)


def _health(status: str, described: ServerDescription) -> str:
    return {
        "running": "answers ready now",
        "unhealthy": "answers, but is not ready for its model",
        "unreachable": "does not answer: its process ended or it cannot be reached"
                       + (" (it should be running)" if described.desired_state == "running"
                          else ""),
        "stopped": "stopped on purpose",
    }.get(status, status)


def strategy_state(described: ServerDescription) -> str:
    """What the server's loaded versions say about a rollout: a shadow being compared, a
    canary at some weight, a blue/green version under verification, or a stable version."""
    serving = described.handle.model_version
    loaded = {v.version: v for v in described.versions}
    if described.shadow is not None:
        view = ShadowView.of(described.shadow)
        live = ", ".join(view.live_versions) or serving
        c = view.cumulative
        agreement = "-" if c.agreement is None else f"{c.agreement:.1%}"
        return (f"shadow: version {view.version} shadows version {live} with "
                f"{view.mirror_percent:g}% of requests mirrored, answering no client "
                f"({c.mirrored} mirrored, {c.dropped} dropped, agreement {agreement})")
    if not loaded:
        return ""
    found = candidate(loaded, serving)
    if found is None:
        return f"stable: version {serving} takes all traffic"
    if 0 < found.weight < 1:
        new = loaded[found.version]
        judged = (f"{new.errors} errors in {new.requests} requests" if new.requests
                  else "no requests yet")
        return (f"canary: version {found.version} at {found.weight:.0%} beside version "
                f"{serving} ({judged})")
    if found.weight >= 1:
        return f"verifying: version {found.version} takes all traffic, {serving} kept loaded"
    return f"version {found.version} loaded beside {serving}, without traffic"


def _scorer_row(info: ScorerInfo) -> Row:
    versions = tuple(VersionRow(v, 1.0, "scoring", 0, 0, None, None, info.config.model_uri)
                     for v in info.model_versions)
    running = sum(r.state == "running" for r in info.replicas)
    return Row(kind="scorer", id=info.id, name=info.name,
               model_name=info.config.model_uri.removeprefix("models:/"),
               status=info.state, desired_state=info.desired_state,
               health=f"{running} of {info.config.replicas} replicas read stream "
                      f"{info.config.stream!r}", endpoint=info.config.stream,
               serving_version=", ".join(info.model_versions), versions=versions,
               scorer=info, last_error=info.last_error)


def _mlflow_facts(reader: MlflowReader, handle: ServiceHandle) -> dict[str, Any]:
    """The serving version's run, data set and last validation, and their links. Raises
    ``MlflowUnavailable``."""
    version = reader.version(handle.model_name, handle.model_version)
    run = reader.run(version["run_id"]) if version.get("run_id") else None
    tags = run["tags"] if run else {}
    return {
        "version_url": reader.version_url(handle.model_name, handle.model_version),
        "run_url": reader.run_url(run) if run else None,
        "run_id": version.get("run_id"),
        "aliases": version["aliases"],
        "gate": version["tags"].get("ctcd.gate"),
        "approval": version["tags"].get("ctcd.approval"),
        "dataset": tags.get("ctcd.dataset"),
        "partition": tags.get("ctcd.partition"),
        "validation": tags.get("ctcd.validation"),
        "data_docs": tags.get("ctcd.data_docs"),
    }
