"""The analysis of a shadow: promote, drop, or inconclusive, from the model server's
comparison of the shadow version with the live one (``GET /admin/shadow``'s
``cumulative``, see :mod:`ctcd.serving.comparison`).

Pure functions over plain data: the ``shadow`` strategy (:mod:`ctcd.deployers.strategies`)
and the CLI's ``ctcd models shadow`` read the same verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ctcd.errors import (
    InvalidStrategy,
    ShadowAwaitingDecision,
    ShadowDropped,
    ShadowInconclusive,
)

Outcome = Literal["promote", "drop", "inconclusive"]


@dataclass(frozen=True)
class ShadowLimits:
    """What a shadow must show to be promoted. ``min_requests``: mirrored requests that
    ended (answered, failed or timed out) before anything is judged; ``min_agreement``:
    share of label rows (a classifier's classes) answered the same; ``max_abs_difference_p95``:
    p95 of the absolute difference of numeric answers (a regressor's, probabilities);
    ``max_error_rate``: errors and timeouts over ended requests; ``max_latency_ratio_p99``:
    the shadow's p99 over the live version's p99 on the same requests (None: not judged);
    ``max_drop_rate``: copies dropped because the shadow's queue was full (a shadow that
    hangs or cannot keep up), over copies offered: above it the shadow is dropped however
    few requests ended."""

    min_requests: int = 100
    min_agreement: float = 0.99
    max_abs_difference_p95: float = 0.01
    max_error_rate: float = 0.01
    max_latency_ratio_p99: float | None = 2.0
    max_drop_rate: float = 0.1


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    summary: str


class ShadowOptions(Protocol):
    """The ``shadow`` strategy's options (:class:`ctcd.deployers.strategies.Shadow`)."""

    @property
    def mirror_percent(self) -> float: ...
    @property
    def min_requests(self) -> int: ...
    @property
    def max_seconds(self) -> float: ...
    @property
    def poll_seconds(self) -> float: ...
    @property
    def min_agreement(self) -> float: ...
    @property
    def max_abs_difference_p95(self) -> float: ...
    @property
    def max_error_rate(self) -> float: ...
    @property
    def max_latency_ratio_p99(self) -> float | None: ...
    @property
    def max_drop_rate(self) -> float: ...
    @property
    def timeout_ms(self) -> float: ...
    @property
    def tolerance(self) -> float: ...
    @property
    def inconclusive(self) -> str: ...


def check_options(o: ShadowOptions) -> None:
    """:class:`InvalidStrategy` naming the first option out of its range."""
    checks = {
        "mirror_percent": 0 < o.mirror_percent <= 100, "min_requests": o.min_requests >= 1,
        "max_seconds": o.max_seconds > 0, "poll_seconds": o.poll_seconds > 0,
        "min_agreement": 0 <= o.min_agreement <= 1,
        "max_abs_difference_p95": o.max_abs_difference_p95 >= 0,
        "max_error_rate": 0 <= o.max_error_rate <= 1, "max_drop_rate": 0 <= o.max_drop_rate <= 1,
        "max_latency_ratio_p99": o.max_latency_ratio_p99 is None or o.max_latency_ratio_p99 > 0,
        "timeout_ms": o.timeout_ms > 0, "tolerance": o.tolerance >= 0,
        "inconclusive": o.inconclusive in ("fail", "hold"),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise InvalidStrategy(
            f"shadow option {bad[0]}={getattr(o, bad[0])!r} is out of range: mirror_percent "
            "in (0, 100], min_requests >= 1, max_error_rate, max_drop_rate and min_agreement in "
            "[0, 1], "
            "max_seconds, poll_seconds, timeout_ms and max_latency_ratio_p99 above 0, "
            "max_abs_difference_p95 and tolerance >= 0, inconclusive 'fail' or 'hold'")


def limits_of(o: ShadowOptions) -> ShadowLimits:
    return ShadowLimits(min_requests=o.min_requests, min_agreement=o.min_agreement,
                        max_abs_difference_p95=o.max_abs_difference_p95,
                        max_error_rate=o.max_error_rate,
                        max_latency_ratio_p99=o.max_latency_ratio_p99,
                        max_drop_rate=o.max_drop_rate)


def ended(cumulative: Mapping[str, Any] | None) -> int:
    """Mirrored requests that ended: answered, failed or timed out."""
    c = cumulative or {}
    return sum(int(c.get(k, 0)) for k in ("answered", "errors", "timeouts"))


def failure(verdict: Verdict, version: str, kept: list[str],
            final: Mapping[str, Any] | None) -> ShadowDropped:
    """The error a dropped or inconclusive shadow ends its deployment with."""
    serving = ", ".join(kept)
    if verdict.outcome == "inconclusive":
        return ShadowInconclusive(
            f"shadow of version {version} was inconclusive: {verdict.reason}. Version(s) "
            f"{serving} keep serving, version {version} was unloaded. Send more traffic, "
            f"raise max_seconds or lower min_requests, and deploy again. "
            f"({verdict.summary})", failed_version=version)
    disagreed = ((final or {}).get("cumulative") or {}).get("disagreeing_requests")
    samples = (" A sample of the disagreeing requests (inputs, both answers, request ids) "
               "is in the request log's table shadow_samples." if disagreed else "")
    return ShadowDropped(
        f"shadow of version {version} failed its analysis: {verdict.reason}. Version(s) "
        f"{serving} keep serving, version {version} was unloaded.{samples} "
        f"({verdict.summary})", failed_version=version)


def awaiting(verdict: Verdict, version: str, live: list[str]) -> ShadowAwaitingDecision:
    """The error an inconclusive shadow held for a person ends its deployment with."""
    return ShadowAwaitingDecision(
        f"shadow of version {version} was inconclusive: {verdict.reason}. It keeps shadowing "
        f"version(s) {', '.join(live)} (answering no client) until a person promotes it to "
        f"live or drops it. ({verdict.summary})", version=version, live_versions=live)


def judge(cumulative: Mapping[str, Any] | None, limits: ShadowLimits) -> Verdict:
    """The verdict on a shadow's whole comparison (``None``: nothing was recorded)."""
    c = cumulative or {}
    summary = summarize(c)
    done = ended(c)
    drop_rate = float(c.get("drop_rate") or 0.0)
    if drop_rate > limits.max_drop_rate:  # it hangs or cannot keep up: conclusive at once
        return Verdict("drop", f"{drop_rate:.1%} of the copies were dropped, the shadow's "
                       f"queue was full (limit {limits.max_drop_rate:.1%}): it hangs or "
                       "cannot keep up with its share of the traffic", summary)
    if done < limits.min_requests:
        return Verdict("inconclusive", f"only {done} mirrored requests ended "
                       f"({limits.min_requests} needed to judge)", summary)
    failures = []
    error_rate = float(c.get("error_rate") or 0.0)
    if error_rate > limits.max_error_rate:
        failures.append(f"error rate {error_rate:.1%} above the limit "
                        f"{limits.max_error_rate:.1%}")
    labels = c.get("labels") or {}
    agreement = labels.get("agreement")
    if agreement is not None and agreement < limits.min_agreement:
        failures.append(f"label agreement {agreement:.2%} below the limit "
                        f"{limits.min_agreement:.2%}")
    p95 = ((c.get("numbers") or {}).get("abs_difference") or {}).get("p95")
    if p95 is not None and p95 > limits.max_abs_difference_p95:
        failures.append(f"p95 absolute difference {p95:.3g} above the limit "
                        f"{limits.max_abs_difference_p95:.3g}")
    latency = c.get("latency_ms") or {}
    live = (latency.get("live") or {}).get("p99")
    shadow = (latency.get("shadow") or {}).get("p99")
    if limits.max_latency_ratio_p99 is not None and live and shadow is not None:
        ratio = shadow / live
        if ratio > limits.max_latency_ratio_p99:
            failures.append(f"p99 latency {shadow:.1f} ms, {ratio:.1f}x the live version's "
                            f"{live:.1f} ms (limit {limits.max_latency_ratio_p99:g}x)")
    if failures:
        return Verdict("drop", "; ".join(failures), summary)
    return Verdict("promote", f"agreement, errors and latency within their limits over "
                   f"{done} requests", summary)


def summarize(c: Mapping[str, Any]) -> str:
    """One line a person reads: what was mirrored and how the two versions compared."""
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    labels = c.get("labels") or {}
    numbers = (c.get("numbers") or {}).get("abs_difference") or {}
    latency = c.get("latency_ms") or {}
    live, shadow = latency.get("live") or {}, latency.get("shadow") or {}
    return (f"mirrored {c.get('mirrored', 0)}, dropped {c.get('dropped', 0)}, answered "
            f"{c.get('answered', 0)}, errors {c.get('errors', 0)}, timeouts "
            f"{c.get('timeouts', 0)}; agreement {num(labels.get('agreement'), '.2%')}; "
            f"abs difference mean/p95/max {num(numbers.get('mean'), '.3g')}/"
            f"{num(numbers.get('p95'), '.3g')}/{num(numbers.get('max'), '.3g')}; "
            f"p99 latency live {num(live.get('p99'), '.1f')} ms, shadow "
            f"{num(shadow.get('p99'), '.1f')} ms; disagreeing requests "
            f"{c.get('disagreeing_requests', 0)}")
