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
(:func:`ctcd.deployers.rollout.taken_over`). Each step's numbers are kept as notes
(``Rollout.events``) that the backends record with the deployment (its analysis evidence).
The steps the strategies are made of are in :mod:`ctcd.deployers.rollout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ctcd.deployers import shadow as analysis
from ctcd.deployers.rollout import (
    Rollout,
    discard,
    ended_by_hand,
    judge,
    load_new,
    roll_back,
    switch,
    taken_over,
    unload_others,
    window,
)
from ctcd.errors import DeploymentError, InvalidStrategy, VersionRejected

__all__ = ["STRATEGIES", "BlueGreen", "Canary", "Replace", "Rollout", "Shadow", "Strategy",
           "StrategySpec", "resolve_strategy", "taken_over"]


@dataclass(frozen=True)
class Replace:
    name: ClassVar[str] = "replace"

    def run(self, rollout: Rollout) -> None:
        previous = load_new(rollout)
        switch(rollout, {rollout.version: 1.0})
        unload_others(rollout, previous)


@dataclass(frozen=True)
class BlueGreen:
    name: ClassVar[str] = "blue_green"
    verify_seconds: float = 3.0
    max_error_rate: float = 0.0
    min_requests: int = 0

    def run(self, rollout: Rollout) -> None:
        previous = load_new(rollout)
        if not rollout.admin.version_ready(rollout.model_name, rollout.version):
            discard(rollout, previous)
            raise VersionRejected(
                f"version {rollout.version} loaded but does not report ready; traffic stays on "
                f"{', '.join(sorted(previous)) or 'nothing'}"
            )
        switch(rollout, {rollout.version: 1.0})
        rollout.note(f"verifying version {rollout.version} for {self.verify_seconds}s")
        before = rollout.admin.versions()
        if ended_by_hand(rollout, previous,
                          rollout.watch(self.verify_seconds, previous)):
            return
        failure = judge(
            before, rollout.admin.versions(), rollout.version,
            max_error_rate=self.max_error_rate, max_latency_ms_p99=None,
            min_requests=self.min_requests,
        )
        if failure:
            roll_back(rollout, previous, f"blue/green verification failed: {failure}")
        rollout.note(f"blue/green verification passed: {window(before, rollout)}")
        unload_others(rollout, previous)


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
        previous = load_new(rollout)
        for weight in self.steps:
            if rollout.remaining() < self.interval_seconds:
                roll_back(rollout, previous, f"canary ran out of time before step {weight:.0%}")
            weights = {v: w * (1.0 - weight) for v, w in previous.items()}
            weights[rollout.version] = weight
            before = rollout.admin.versions()
            if ended_by_hand(rollout, previous,
                              taken_over(before, rollout.version, previous)):
                return
            try:
                switch(rollout, weights)
            except DeploymentError:  # the version went away between the look and the switch
                if ended_by_hand(rollout, previous,
                                  taken_over(rollout.admin.versions(), rollout.version,
                                             previous)):
                    return
                raise
            if ended_by_hand(rollout, previous,
                              rollout.watch(self.interval_seconds, previous)):
                return
            failure = judge(
                before, rollout.admin.versions(), rollout.version,
                max_error_rate=self.max_error_rate, max_latency_ms_p99=self.max_latency_ms_p99,
                min_requests=self.min_requests,
            )
            if failure:
                roll_back(rollout, previous, f"canary failed at {weight:.0%} traffic: {failure}")
            rollout.note(f"canary step {weight:.0%} passed: {window(before, rollout)}")
        switch(rollout, {rollout.version: 1.0})
        unload_others(rollout, previous)


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
        previous = load_new(rollout)
        if not previous:
            discard(rollout, previous)
            raise DeploymentError(
                f"no version serves {rollout.model_name}, so a shadow of version "
                f"{rollout.version} has nothing to be compared with; deploy it with "
                "replace or blue_green")
        try:
            rollout.admin.start_shadow({
                "version": rollout.version, "mirror_percent": self.mirror_percent,
                "timeout_ms": self.timeout_ms, "tolerance": self.tolerance})
        except DeploymentError:
            discard(rollout, previous)
            raise
        rollout.note(f"shadowing version {rollout.version} with {self.mirror_percent:g}% of "
                     f"the requests to {', '.join(sorted(previous))} until "
                     f"{self.min_requests} of them ended or {self.max_seconds:g}s passed")
        until = rollout.clock() + min(self.max_seconds, max(rollout.remaining() - 5.0, 0.0))
        while rollout.clock() < until:
            state = rollout.admin.shadow_state(samples=0)
            if state is None:  # ended on the server: promoted or unloaded by hand?
                if ended_by_hand(rollout, previous, taken_over(
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
            switch(rollout, {rollout.version: 1.0})
            unload_others(rollout, previous)
            return
        discard(rollout, previous)
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
