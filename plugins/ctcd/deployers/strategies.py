"""Deployment strategies: how traffic moves from the serving version to a new one.

Each strategy runs against a live model server that can hold several versions of a model at
once (see :class:`ctcd.deployers.admin.AdminClient`), so none needs a new process and no
request is dropped: versions are loaded and warmed before they get traffic, traffic moves
atomically, and a version is unloaded only once it has no weight.

* ``replace``: load + warm the new version, send it all traffic, unload the old one.
* ``blue_green``: load + warm + health-check the new version, switch all traffic at once,
  keep the old one loaded while the new one is verified under traffic for
  ``verify_seconds``; switch back (rollback) if its error rate exceeds the limit.
* ``canary``: give the new version growing weights (``steps``); after each step watch it for
  ``interval_seconds`` and check health, error rate and p99 latency against limits. Promote
  when every step passes, roll back automatically when one fails.
* ``shadow``: load + warm the new version beside the serving one with no traffic; the
  server mirrors ``mirror_percent`` of live requests to it and compares its answers with the
  live ones (never returning them). After ``min_requests`` mirrored requests ended, or
  ``max_seconds``, the analysis (:mod:`ctcd.deployers.shadow`) promotes it (all traffic at
  once, as blue_green switches), or drops it (unloaded; nothing changed for clients), or
  finds the evidence inconclusive (too few requests: dropped, and the deploy fails).

A failure raises a :class:`ctcd.errors.DeploymentError` subclass after traffic is back on
the previous version.

While a strategy waits (a canary's interval, a blue/green verification), someone may end the
rollout by hand through the deployer contract (``promote_model_server``,
``rollback_model_server``; the deployments page in the Airflow UI): the strategy watches the
server's versions every ``watch_seconds`` and stops with that outcome, the one recorded
(:func:`taken_over`). Each step's numbers are kept as notes (``Rollout.events``) that the
backends record with the deployment (its analysis evidence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ctcd.deployers import shadow as analysis
from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.errors import DeploymentError, InvalidStrategy, RolledBack, VersionRejected

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """Everything a strategy needs for one deployment; ``sleep``/``clock`` are injectable."""

    admin: AdminClient
    model_name: str
    model_uri: str
    version: str
    deadline: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    serving_since: float | None = None  # when the new version first took traffic
    events: list[str] = field(default_factory=list)
    watch_seconds: float = 1.0

    def remaining(self) -> float:
        return max(self.deadline - self.clock(), 0.0)

    def note(self, message: str) -> None:
        log.info("%s", message)
        self.events.append(message)

    def wait(self, seconds: float) -> None:
        self.sleep(min(seconds, self.remaining()))

    def watch(self, seconds: float, previous: Mapping[str, float]) -> str | None:
        """Wait ``seconds`` (within the deadline), looking at the server every
        ``watch_seconds``; return ``"promoted"`` or ``"rolled_back"`` as soon as someone
        ended the rollout by hand, else ``None``."""
        end = self.clock() + min(seconds, self.remaining())
        while True:
            outcome = taken_over(self.admin.versions(), self.version, previous)
            left = end - self.clock()
            if outcome or left <= 0:
                return outcome
            self.sleep(min(self.watch_seconds, left))


@dataclass(frozen=True)
class Replace:
    name: ClassVar[str] = "replace"

    def run(self, rollout: Rollout) -> None:
        previous = _load_new(rollout)
        _switch(rollout, {rollout.version: 1.0})
        _unload_others(rollout, previous)


@dataclass(frozen=True)
class BlueGreen:
    name: ClassVar[str] = "blue_green"
    verify_seconds: float = 3.0
    max_error_rate: float = 0.0
    min_requests: int = 0

    def run(self, rollout: Rollout) -> None:
        previous = _load_new(rollout)
        if not rollout.admin.version_ready(rollout.model_name, rollout.version):
            _discard(rollout, previous)
            raise VersionRejected(
                f"version {rollout.version} loaded but does not report ready; traffic stays on "
                f"{', '.join(sorted(previous)) or 'nothing'}"
            )
        _switch(rollout, {rollout.version: 1.0})
        rollout.note(f"verifying version {rollout.version} for {self.verify_seconds}s")
        before = rollout.admin.versions()
        if _ended_by_hand(rollout, previous,
                          rollout.watch(self.verify_seconds, previous)):
            return
        failure = _judge(
            before, rollout.admin.versions(), rollout.version,
            max_error_rate=self.max_error_rate, max_latency_ms_p99=None,
            min_requests=self.min_requests,
        )
        if failure:
            _roll_back(rollout, previous, f"blue/green verification failed: {failure}")
        rollout.note(f"blue/green verification passed: {_window(before, rollout)}")
        _unload_others(rollout, previous)


@dataclass(frozen=True)
class Canary:
    name: ClassVar[str] = "canary"
    steps: tuple[float, ...] = (0.1, 0.5)
    interval_seconds: float = 10.0
    max_error_rate: float = 0.05
    max_latency_ms_p99: float | None = None
    min_requests: int = 0

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        if not steps or any(not 0 < s < 1 for s in steps) or list(steps) != sorted(steps):
            raise InvalidStrategy(
                f"canary steps must be increasing weights between 0 and 1, got {self.steps}"
            )
        object.__setattr__(self, "steps", steps)

    def run(self, rollout: Rollout) -> None:
        previous = _load_new(rollout)
        for weight in self.steps:
            if rollout.remaining() < self.interval_seconds:
                _roll_back(rollout, previous, f"canary ran out of time before step {weight:.0%}")
            weights = {v: w * (1.0 - weight) for v, w in previous.items()}
            weights[rollout.version] = weight
            before = rollout.admin.versions()
            if _ended_by_hand(rollout, previous,
                              taken_over(before, rollout.version, previous)):
                return
            try:
                _switch(rollout, weights)
            except DeploymentError:  # the version went away between the look and the switch
                if _ended_by_hand(rollout, previous,
                                  taken_over(rollout.admin.versions(), rollout.version,
                                             previous)):
                    return
                raise
            if _ended_by_hand(rollout, previous,
                              rollout.watch(self.interval_seconds, previous)):
                return
            failure = _judge(
                before, rollout.admin.versions(), rollout.version,
                max_error_rate=self.max_error_rate, max_latency_ms_p99=self.max_latency_ms_p99,
                min_requests=self.min_requests,
            )
            if failure:
                _roll_back(rollout, previous, f"canary failed at {weight:.0%} traffic: {failure}")
            rollout.note(f"canary step {weight:.0%} passed: {_window(before, rollout)}")
        _switch(rollout, {rollout.version: 1.0})
        _unload_others(rollout, previous)


@dataclass(frozen=True)
class Shadow:
    name: ClassVar[str] = "shadow"
    mirror_percent: float = 100.0
    min_requests: int = 100
    max_seconds: float = 300.0
    poll_seconds: float = 1.0
    min_agreement: float = 0.99
    max_abs_difference_p95: float = 0.01
    max_error_rate: float = 0.01
    max_latency_ratio_p99: float | None = 2.0
    max_drop_rate: float = 0.1
    timeout_ms: float = 1000.0
    tolerance: float = 1e-6
    # "hold": too few requests to judge leaves the shadow running for a person to decide
    inconclusive: str = "fail"

    def __post_init__(self) -> None:
        analysis.check_options(self)

    def run(self, rollout: Rollout) -> None:
        previous = _load_new(rollout)
        if not previous:
            _discard(rollout, previous)
            raise DeploymentError(
                f"no version serves {rollout.model_name}, so a shadow of version "
                f"{rollout.version} has nothing to be compared with; deploy it with "
                "replace or blue_green")
        try:
            rollout.admin.start_shadow({
                "version": rollout.version, "mirror_percent": self.mirror_percent,
                "timeout_ms": self.timeout_ms, "tolerance": self.tolerance})
        except DeploymentError:
            _discard(rollout, previous)
            raise
        rollout.note(f"shadowing version {rollout.version} with {self.mirror_percent:g}% of "
                     f"the requests to {', '.join(sorted(previous))} until "
                     f"{self.min_requests} of them ended or {self.max_seconds:g}s passed")
        until = rollout.clock() + min(self.max_seconds, max(rollout.remaining() - 5.0, 0.0))
        while rollout.clock() < until:
            state = rollout.admin.shadow_state(samples=0)
            if state is None:  # ended on the server: promoted or unloaded by hand?
                if _ended_by_hand(rollout, previous, taken_over(
                        rollout.admin.versions(), rollout.version, previous)):
                    return
                break
            if analysis.ended(state.get("cumulative")) >= self.min_requests:
                break
            rollout.sleep(min(self.poll_seconds, max(until - rollout.clock(), 0.0)))
        if self.inconclusive == "hold":
            self._hold_if_inconclusive(rollout, sorted(previous))
        final = rollout.admin.stop_shadow()
        verdict = analysis.judge((final or {}).get("cumulative"), analysis.limits_of(self))
        rollout.note(f"shadow of version {rollout.version}: {verdict.summary}")
        if verdict.outcome == "promote":
            rollout.note(f"shadow analysis passed: {verdict.reason}")
            _switch(rollout, {rollout.version: 1.0})
            _unload_others(rollout, previous)
            return
        _discard(rollout, previous)
        rollout.note(f"dropped version {rollout.version} ({verdict.outcome}): {verdict.reason}")
        raise analysis.failure(verdict, rollout.version, sorted(previous), final)

    def _hold_if_inconclusive(self, rollout: Rollout, live: list[str]) -> None:
        """Too few requests to judge: leave the shadow running and hand the decision over."""
        state = rollout.admin.shadow_state(samples=0)
        if state is None:
            return
        verdict = analysis.judge(state.get("cumulative"), analysis.limits_of(self))
        if verdict.outcome != "inconclusive":
            return
        rollout.note(f"shadow of version {rollout.version}: {verdict.summary}")
        rollout.note(f"inconclusive ({verdict.reason}): the shadow keeps running, answering "
                     "no client, until a person promotes or drops it")
        raise analysis.awaiting(verdict, rollout.version, live)


Strategy = Replace | BlueGreen | Canary | Shadow
StrategySpec = str | Strategy | Mapping[str, Any]
STRATEGIES: dict[str, type[Replace] | type[BlueGreen] | type[Canary] | type[Shadow]] = {
    cls.name: cls for cls in (Replace, BlueGreen, Canary, Shadow)
}


def resolve_strategy(spec: StrategySpec) -> Strategy:
    """A strategy from a name (``"canary"``), an object, or ``{"name": ..., **options}``."""
    if isinstance(spec, Replace | BlueGreen | Canary | Shadow):
        return spec
    if isinstance(spec, str):
        options: dict[str, Any] = {}
        name = spec
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = str(options.pop("name", options.pop("strategy", "")))
    else:
        raise InvalidStrategy(f"strategy must be a name, a mapping or a Strategy, got {spec!r}")
    cls = STRATEGIES.get(name.replace("-", "_"))
    if cls is None:
        raise InvalidStrategy(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidStrategy(
            f"unknown option(s) {unknown} for strategy {name!r}; valid: {sorted(allowed)}"
        )
    if "steps" in options:
        options["steps"] = tuple(options["steps"])
    try:
        return cls(**options)
    except TypeError as err:
        raise InvalidStrategy(f"bad options for strategy {name!r}: {err}") from err


# -- steps shared by the strategies ---------------------------------------------------------


def taken_over(
    versions: Mapping[str, VersionStats], version: str, previous: Mapping[str, float]
) -> str | None:
    """How a rollout of ``version`` was ended by hand, judged from the server's versions:
    ``"rolled_back"`` when ``version`` is no longer loaded, ``"promoted"`` when it takes all
    traffic and none of the ``previous`` versions is loaded any more, else ``None``."""
    if version not in versions:
        return "rolled_back"
    if previous and not set(previous) & set(versions) and versions[version].weight >= 1.0:
        return "promoted"
    return None


def _ended_by_hand(rollout: Rollout, previous: Mapping[str, float], outcome: str | None
                   ) -> bool:
    """Stop the strategy when someone promoted the new version by hand (True: the rollout
    is done); raise ``RolledBack`` when someone rolled it back."""
    if outcome == "promoted":
        rollout.note(f"version {rollout.version} was promoted by hand before the strategy "
                     "finished; it serves all traffic")
        return True
    if outcome == "rolled_back":
        rollout.note(f"version {rollout.version} was rolled back by hand")
        raise RolledBack(
            f"version {rollout.version} was rolled back by hand (the deployer's "
            "rollback_model_server, e.g. from the deployments page) before the strategy "
            "finished; the previous version serves all traffic",
            kept_version=", ".join(sorted(previous)), failed_version=rollout.version,
        )
    return False


def _window(before: Mapping[str, VersionStats], rollout: Rollout) -> str:
    """The new version's numbers over the window just judged, for the notes."""
    now = rollout.admin.versions().get(rollout.version)
    if now is None:
        return "no numbers"
    start = before.get(rollout.version)
    requests = now.requests - (start.requests if start else 0)
    errors = now.errors - (start.errors if start else 0)
    p99 = "-" if now.latency_ms_p99 is None else f"{now.latency_ms_p99:.1f} ms"
    return f"{errors} errors in {requests} requests, p99 {p99}"


def _load_new(rollout: Rollout) -> dict[str, float]:
    """Load + warm the new version; return the weights serving before (the rollback target)."""
    previous = {v: w for v, w in rollout.admin.serving().items() if v != rollout.version}
    rollout.note(f"loading version {rollout.version} from {rollout.model_uri}")
    rollout.admin.load(rollout.model_uri, rollout.version, timeout=max(rollout.remaining(), 1.0))
    stats = rollout.admin.versions().get(rollout.version)
    if stats is None or stats.state != "ready":
        state = "missing" if stats is None else stats.state
        _discard(rollout, previous)
        raise VersionRejected(
            f"version {rollout.version} is {state} after loading; the previous version keeps "
            "serving. See the server log with `ctcd models logs`."
        )
    return previous


def _switch(rollout: Rollout, weights: dict[str, float]) -> None:
    rollout.admin.set_traffic(weights)
    if rollout.serving_since is None and weights.get(rollout.version, 0) > 0:
        rollout.serving_since = rollout.clock()
    rollout.note("traffic " + ", ".join(f"{v}={w:.2f}" for v, w in sorted(weights.items())))


def _unload_others(rollout: Rollout, previous: Mapping[str, float]) -> None:
    for version in rollout.admin.versions():
        if version != rollout.version:
            rollout.admin.unload(version)
            rollout.note(f"unloaded version {version}")


def _discard(rollout: Rollout, previous: Mapping[str, float]) -> None:
    if previous:
        rollout.admin.set_traffic(dict(previous))
    rollout.admin.unload(rollout.version)


def _roll_back(rollout: Rollout, previous: Mapping[str, float], reason: str) -> None:
    if not previous:
        raise DeploymentError(
            f"{reason}; there is no previous version to roll back to, so version "
            f"{rollout.version} keeps serving. Fix the model and deploy again."
        )
    _discard(rollout, previous)
    kept = ", ".join(sorted(previous))
    rollout.note(f"rolled back to version(s) {kept}: {reason}")
    raise RolledBack(
        f"{reason}. Rolled back: version(s) {kept} serve all traffic again, version "
        f"{rollout.version} was unloaded.",
        kept_version=kept,
        failed_version=rollout.version,
    )


def _judge(
    before: Mapping[str, VersionStats],
    after: Mapping[str, VersionStats],
    version: str,
    *,
    max_error_rate: float,
    max_latency_ms_p99: float | None,
    min_requests: int,
) -> str | None:
    """Why the new version fails its window (``None`` if it passes)."""
    now = after.get(version)
    if now is None or now.state != "ready":
        return f"version {version} is {'missing' if now is None else now.state}"
    start = before.get(version)
    requests = now.requests - (start.requests if start else 0)
    errors = now.errors - (start.errors if start else 0)
    if requests < min_requests:
        return f"only {requests} requests reached it (at least {min_requests} needed to judge)"
    if requests > 0:
        rate = errors / requests
        if rate > max_error_rate:
            limit = f"{max_error_rate:.1%}"
            return f"error rate {rate:.1%} ({errors}/{requests}) above the limit {limit}"
        p99 = now.latency_ms_p99
        if max_latency_ms_p99 is not None and p99 is not None and p99 > max_latency_ms_p99:
            return f"p99 latency {p99:.0f} ms above the limit {max_latency_ms_p99:.0f} ms"
    return None
