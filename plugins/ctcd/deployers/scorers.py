"""The streaming-scorer contract: the optional :class:`SupportsScorers` capability of a
model deployer (:mod:`ctcd.deployers.base`), and the values it deals in.

A backend that runs streaming scorers (``python -m ctcd.streaming``, :mod:`ctcd.streaming`)
as long-lived services has the methods of :class:`SupportsScorers`; callers get it with
:func:`scorers_of`, which names the backend when it cannot. Backends usually implement the
methods in a scorer module of their own (a :class:`ScorerBackend`) and mix
:class:`ScorersFrom` into the deployer class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from ctcd.deployers.base import DEFAULT_TIMEOUT, ModelDeployer, known_fields, redact_uri
from ctcd.errors import InvalidParams

# Scorer options a backend sets per replica itself, so a config may not.
SCORER_MANAGED_OPTIONS = frozenset(
    {"model_uri", "redis_url", "stream", "group", "consumer", "tracking_uri", "health_host",
     "health_port", "reload_token"})
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ScorerNotFound(InvalidParams):
    status_code = 404

    def __init__(self, name: str, backend: str = "") -> None:
        where = f" in backend {backend!r}" if backend else ""
        super().__init__(f"no streaming scorer {name!r}{where}; `ctcd streaming list` shows "
                         "them")


@dataclass(frozen=True, kw_only=True)
class ScorerConfig:
    """What a streaming scorer deployment runs: ``replicas`` consumers of ``group`` on
    ``stream``, scoring with ``model_uri`` (``models:/NAME@champion`` follows the alias;
    ``models:/NAME/VERSION`` pins a version). Like :class:`DeploymentConfig` it is the
    desired state a backend records and restarts from, so it holds no secret: a password in
    ``redis_url`` is dropped (the backend takes the full URL from ``CTCD_SCORER_REDIS_URL``
    of the process that deploys or starts it). ``options`` are the scorer's other settings
    (:class:`ctcd.streaming.settings.ScorerSettings` names: ``batch_size``, ``min_idle_ms``,
    ``reload_interval``, ``dataset``...)."""

    name: str
    model_uri: str
    stream: str
    redis_url: str = DEFAULT_REDIS_URL
    group: str = "ctcd-scorers"
    replicas: int = 1
    tracking_uri: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("name", "model_uri", "stream", "group"):
            if not str(getattr(self, name)).strip():
                raise InvalidParams(f"ScorerConfig.{name} must be a non-empty string")
        if self.replicas < 1:
            raise InvalidParams("ScorerConfig.replicas must be at least 1")
        from ctcd.streaming.settings import ScorerSettings

        allowed = sorted(set(ScorerSettings.model_fields) - SCORER_MANAGED_OPTIONS)
        for key in self.options:
            if key not in allowed:
                raise InvalidParams(f"scorer option {key!r} is not one to set here; options "
                                    f"are {allowed}")
        object.__setattr__(self, "options", {k: str(v) for k, v in self.options.items()})
        object.__setattr__(self, "redis_url", redact_uri(self.redis_url))
        if self.tracking_uri:
            object.__setattr__(self, "tracking_uri", redact_uri(self.tracking_uri))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, scorer_id: str, *, name: str | None = None,
                model_uri: str | None = None, stream: str | None = None) -> bool:
        """Whether the scorer ``scorer_id`` with this config passes ``find_scorers``'
        filters (``name`` matches the name or the id)."""
        return ((not name or name in (self.name, scorer_id))
                and (not model_uri or self.model_uri == model_uri)
                and (not stream or self.stream == stream))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerConfig:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True, kw_only=True)
class ReplicaStatus:
    """One scorer process (local) or pod (Kubernetes), observed now.

    :param consumer: its consumer name in the group.
    :param state: ``running`` (alive and its heartbeat or probe says it reads the stream),
        ``starting`` (alive, not yet reading: loading the model) or ``stopped``.
    :param heartbeat: the scorer's last status from Redis (model version, counters), if
        the backend reads it.
    :param details: backend facts (``pid``; ``pod``, ``restarts``). Plain JSON values.
    """

    consumer: str
    state: str
    heartbeat: Mapping[str, Any] | None = None
    details: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ScorerInfo:
    """Everything a backend knows about one scorer deployment, replicas observed now."""

    id: str
    name: str
    backend: str
    config: ScorerConfig
    desired_state: str  # running | stopped, as last asked of the backend
    replicas: tuple[ReplicaStatus, ...] = ()
    last_error: str | None = None
    details: Mapping[str, str | int | float | bool | None] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """``running`` (at least ``config.replicas`` replicas read the stream),
        ``degraded`` (some do), ``starting`` (none yet, some alive) or ``stopped``."""
        running = sum(r.state == "running" for r in self.replicas)
        if running and running >= self.config.replicas:
            return "running"
        if running:
            return "degraded"
        return "starting" if any(r.state == "starting" for r in self.replicas) else "stopped"

    @property
    def model_versions(self) -> list[str]:
        """The versions the running replicas score with now (from their heartbeats)."""
        return sorted({str(r.heartbeat["model_version"]) for r in self.replicas
                       if r.heartbeat and r.heartbeat.get("model_version") is not None})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "backend": self.backend, "state": self.state,
                "desired_state": self.desired_state, "config": self.config.to_dict(),
                "model_versions": self.model_versions, "last_error": self.last_error,
                "details": dict(self.details),
                "replicas": [{"consumer": r.consumer, "state": r.state,
                              "heartbeat": dict(r.heartbeat) if r.heartbeat else None,
                              "details": dict(r.details)} for r in self.replicas]}


@runtime_checkable
class SupportsScorers(Protocol):
    """Capability: run streaming scorers (``python -m ctcd.streaming``) as long-lived
    services, the way model servers are run. Get it with :func:`scorers_of`.

    The rules of :class:`ModelDeployer` hold here too: one deployment per
    ``ScorerConfig.name``; queries are pure and observe now; the record holds what a restart
    needs and no secret; a scorer that does not become ready in time is stopped and the
    call raises ``ServerStartFailed``. Methods taking ``name`` accept the scorer's name or
    id and raise :class:`ScorerNotFound`.

    No request is lost by anything here: scorers acknowledge an entry only in the
    transaction that writes its prediction, so a stop, restart, rolling update or killed
    replica leaves what it held pending for a replica to claim (at-least-once).
    """

    def deploy_scorer(self, config: ScorerConfig, timeout: float = DEFAULT_TIMEOUT
                      ) -> ScorerInfo:
        """Run ``config``: create the scorer, or roll it to a changed config (replicas
        finish or hand over what they hold); an unchanged running scorer is left as is.
        Waits until ``config.replicas`` replicas read the stream."""
        ...

    def find_scorers(self, *, name: str | None = None, model_uri: str | None = None,
                     stream: str | None = None, running: bool = False) -> list[ScorerInfo]:
        """Scorers matching every given filter; ``running=True`` keeps those observed
        running now. A pure query."""
        ...

    def describe_scorer(self, name: str) -> ScorerInfo:
        """One scorer, observed now."""
        ...

    def start_scorer(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """Start a stopped (or partly crashed) scorer as last deployed; wait until it runs."""
        ...

    def stop_scorer(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        """Stop every replica (each finishes the batch in hand; unread requests wait in the
        stream), keeping the record. ``force`` kills what has not stopped in ``timeout``;
        without it that raises ``ServerStopFailed``."""
        ...

    def restart_scorer(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        """Replace every replica with a fresh one, as last deployed."""
        ...

    def delete_scorer(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        """Stop it and remove everything the backend made for it (its streams and consumer
        group stay in Redis)."""
        ...

    def get_scorer_logs(self, name: str, *, replica: int | None = None, follow: bool = False,
                        tail: int | None = None) -> Iterator[str]:
        """Log lines of replica ``replica`` (0-based), or of every replica, each line then
        prefixed ``[consumer] ``; with ``follow``, of one replica until it stops."""
        ...

    def reload_scorer(self, name: str) -> int:
        """Make every running replica check its model alias now; a new version (a new
        champion) is loaded in the background and swapped in between batches, so no
        request waits or is lost. Returns how many replicas were asked. A pinned
        ``models:/NAME/VERSION`` changes only by :meth:`deploy_scorer`."""
        ...


class ScorerBackend(Protocol):
    """What a backend's scorer module provides (``LocalScorers``, ``KubernetesScorers``):
    the :class:`SupportsScorers` methods under short names."""

    def deploy(self, config: ScorerConfig, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo: ...

    def find(self, *, name: str | None = None, model_uri: str | None = None,
             stream: str | None = None, running: bool = False) -> list[ScorerInfo]: ...

    def get(self, name: str) -> ScorerInfo: ...

    def start(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo: ...

    def stop(self, name: str, timeout: float = 60.0, force: bool = False) -> None: ...

    def restart(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo: ...

    def delete(self, name: str, timeout: float = 60.0, force: bool = False) -> None: ...

    def logs(self, name: str, *, replica: int | None = None, follow: bool = False,
             tail: int | None = None) -> Iterator[str]: ...

    def reload(self, name: str) -> int: ...


class ScorersFrom:
    """The :class:`SupportsScorers` methods of a backend, each handing over to the
    :class:`ScorerBackend` its ``scorers`` property returns. Mixed into a deployer class,
    it keeps scorer code out of the deployer's module."""

    @property
    def scorers(self) -> ScorerBackend:
        raise NotImplementedError

    def deploy_scorer(self, config: ScorerConfig, timeout: float = DEFAULT_TIMEOUT
                      ) -> ScorerInfo:
        return self.scorers.deploy(config, timeout)

    def find_scorers(self, *, name: str | None = None, model_uri: str | None = None,
                     stream: str | None = None, running: bool = False) -> list[ScorerInfo]:
        return self.scorers.find(name=name, model_uri=model_uri, stream=stream,
                                 running=running)

    def describe_scorer(self, name: str) -> ScorerInfo:
        return self.scorers.get(name)

    def start_scorer(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        return self.scorers.start(name, timeout)

    def stop_scorer(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        self.scorers.stop(name, timeout, force)

    def restart_scorer(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> ScorerInfo:
        return self.scorers.restart(name, timeout)

    def delete_scorer(self, name: str, timeout: float = 60.0, force: bool = False) -> None:
        self.scorers.delete(name, timeout, force)

    def get_scorer_logs(self, name: str, *, replica: int | None = None, follow: bool = False,
                        tail: int | None = None) -> Iterator[str]:
        return self.scorers.logs(name, replica=replica, follow=follow, tail=tail)

    def reload_scorer(self, name: str) -> int:
        return self.scorers.reload(name)


def scorers_of(deployer: ModelDeployer) -> SupportsScorers:
    """``deployer`` as a :class:`SupportsScorers`, or an error naming the backend."""
    if not isinstance(deployer, SupportsScorers):
        raise InvalidParams(
            f"deployer {deployer.name!r} cannot run streaming scorers (it lacks the "
            "SupportsScorers capability of ctcd/deployers/scorers.py); use the 'local' or "
            "'kubernetes' backend (`--deployer` or CTCD_DEPLOYER), or run "
            "`python -m ctcd.streaming` under your own process manager"
        )
    return deployer
