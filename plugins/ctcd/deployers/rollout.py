"""One rollout's state and the steps the deployment strategies
(:mod:`ctcd.deployers.strategies`) are made of: load and warm the new version, move traffic,
judge a window of its numbers, roll back, unload, and notice a rollout someone ended by
hand."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.errors import DeploymentError, RolledBack, VersionRejected

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


def ended_by_hand(rollout: Rollout, previous: Mapping[str, float], outcome: str | None
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


def window(before: Mapping[str, VersionStats], rollout: Rollout) -> str:
    """The new version's numbers over the window just judged, for the notes."""
    now = rollout.admin.versions().get(rollout.version)
    if now is None:
        return "no numbers"
    start = before.get(rollout.version)
    requests = now.requests - (start.requests if start else 0)
    errors = now.errors - (start.errors if start else 0)
    p99 = "-" if now.latency_ms_p99 is None else f"{now.latency_ms_p99:.1f} ms"
    return f"{errors} errors in {requests} requests, p99 {p99}"


def load_new(rollout: Rollout) -> dict[str, float]:
    """Load + warm the new version; return the weights serving before (the rollback target)."""
    previous = {v: w for v, w in rollout.admin.serving().items() if v != rollout.version}
    rollout.note(f"loading version {rollout.version} from {rollout.model_uri}")
    rollout.admin.load(rollout.model_uri, rollout.version, timeout=max(rollout.remaining(), 1.0))
    stats = rollout.admin.versions().get(rollout.version)
    if stats is None or stats.state != "ready":
        state = "missing" if stats is None else stats.state
        discard(rollout, previous)
        raise VersionRejected(
            f"version {rollout.version} is {state} after loading; the previous version keeps "
            "serving. See the server log with `ctcd models logs`."
        )
    return previous


def switch(rollout: Rollout, weights: dict[str, float]) -> None:
    rollout.admin.set_traffic(weights)
    if rollout.serving_since is None and weights.get(rollout.version, 0) > 0:
        rollout.serving_since = rollout.clock()
    rollout.note("traffic " + ", ".join(f"{v}={w:.2f}" for v, w in sorted(weights.items())))


def unload_others(rollout: Rollout, previous: Mapping[str, float]) -> None:
    for version in rollout.admin.versions():
        if version != rollout.version:
            rollout.admin.unload(version)
            rollout.note(f"unloaded version {version}")


def discard(rollout: Rollout, previous: Mapping[str, float]) -> None:
    if previous:
        rollout.admin.set_traffic(dict(previous))
    rollout.admin.unload(rollout.version)


def roll_back(rollout: Rollout, previous: Mapping[str, float], reason: str) -> None:
    if not previous:
        raise DeploymentError(
            f"{reason}; there is no previous version to roll back to, so version "
            f"{rollout.version} keeps serving. Fix the model and deploy again."
        )
    discard(rollout, previous)
    kept = ", ".join(sorted(previous))
    rollout.note(f"rolled back to version(s) {kept}: {reason}")
    raise RolledBack(
        f"{reason}. Rolled back: version(s) {kept} serve all traffic again, version "
        f"{rollout.version} was unloaded.",
        kept_version=kept,
        failed_version=rollout.version,
    )


def judge(
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
