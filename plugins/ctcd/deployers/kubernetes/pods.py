"""The admin API of every pod of a server, as one :class:`ctcd.deployers.admin.AdminClient`.

A call through the Service would reach one pod only, but a version must be loaded, weighted
and unloaded on all of them (as the server itself does across its ``--workers``). So each
call goes to every ready pod, and ``versions()`` adds their counters up (p50/p99: the worst
pod), which lets :mod:`ctcd.deployers.strategies` run unchanged: the same steps, the same
analysis, the same automatic rollback as on one machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ctcd.deployers.admin import AdminClient, VersionStats
from ctcd.errors import CtcdError, VersionRejected
from ctcd.serving.comparison import merge_states

log = logging.getLogger(__name__)


class PodsAdmin(AdminClient):
    """``pods`` is ``[(pod name, admin URL)]``, the server's ready pods."""

    def __init__(
        self, pods: Sequence[tuple[str, str]], *, token: str | None, timeout: float = 30.0
    ) -> None:
        if not pods:
            raise ValueError("PodsAdmin needs at least one pod")
        super().__init__(pods[0][1], token=token, timeout=timeout)
        self.pods = [(name, AdminClient(url, token=token, timeout=timeout)) for name, url in pods]
        self.endpoint = ", ".join(url for _, url in pods)

    def close(self) -> None:
        super().close()
        for _, admin in self.pods:
            admin.close()

    def versions(self, strict: bool = True) -> dict[str, VersionStats]:
        """Every pod's versions, counters added up; ``strict=False`` skips a pod that does
        not answer (e.g. one going away) instead of failing."""
        merged: dict[str, VersionStats] = {}
        for name, admin in self.pods:
            try:
                answer = admin.versions()
            except CtcdError as err:
                if strict:
                    raise type(err)(f"pod {name}: {err.message}") from err
                log.warning("pod %s: %s", name, err.message)
                continue
            for version, stats in answer.items():
                merged[version] = _add(merged[version], stats) if version in merged else stats
        return merged

    def load(self, model_uri: str, version: str, *, timeout: float) -> None:
        done: list[AdminClient] = []
        for name, admin in self.pods:
            try:
                admin.load(model_uri, version, timeout=timeout)
            except CtcdError as err:
                for loaded in done:  # the pods that did load it must not keep it
                    _quietly(loaded.unload, version)
                raise VersionRejected(f"pod {name}: {err.message}") from err
            done.append(admin)

    def version_ready(self, model_name: str, version: str) -> bool:
        return all(admin.version_ready(model_name, version) for _, admin in self.pods)

    def set_traffic(self, weights: dict[str, float]) -> None:
        before = [admin.serving() for _, admin in self.pods]
        for i, (name, admin) in enumerate(self.pods):
            try:
                admin.set_traffic(weights)
            except CtcdError as err:
                for (_, changed), old in zip(self.pods[:i], before, strict=False):
                    _quietly(changed.set_traffic, old)
                raise type(err)(f"pod {name}: {err.message}") from err

    def unload(self, version: str) -> None:
        for _, admin in self.pods:
            admin.unload(version)

    # the shadow runs in every pod (each mirrors its own share of the traffic); its state is
    # the pods' comparisons merged (counts added, histograms merged, samples of all)
    def start_shadow(self, plan: dict[str, Any]) -> dict[str, Any] | None:
        for i, (name, admin) in enumerate(self.pods):
            try:
                admin.start_shadow(plan)
            except CtcdError as err:
                for _, started in self.pods[:i]:
                    _quietly(started.stop_shadow)
                raise type(err)(f"pod {name}: {err.message}") from err
        return self.shadow_state()

    def shadow_state(self, samples: int = 20) -> dict[str, Any] | None:
        return _merged([admin.shadow_state(samples) for _, admin in self.pods], samples)

    def stop_shadow(self) -> dict[str, Any] | None:
        return _merged([admin.stop_shadow() for _, admin in self.pods], 20)


def _merged(states: list[dict[str, Any] | None], samples: int) -> dict[str, Any] | None:
    found = [s for s in states if s is not None]
    return merge_states(found[0], found[1:], samples) if found else None


def _add(a: VersionStats, b: VersionStats) -> VersionStats:
    state = a.state if a.state != "ready" else b.state
    return VersionStats(
        version=a.version, model_uri=a.model_uri, weight=a.weight, state=state,
        requests=a.requests + b.requests, errors=a.errors + b.errors,
        latency_ms_p50=_worst(a.latency_ms_p50, b.latency_ms_p50),
        latency_ms_p99=_worst(a.latency_ms_p99, b.latency_ms_p99),
        runtime=a.runtime, compiled=a.compiled, compiled_reason=a.compiled_reason,
    )


def _worst(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except CtcdError as err:
        log.warning("undoing a partial change failed: %s", err.message)
