"""The comparison of a shadow version with the live one: counts and distributions that add
up across windows, worker processes and pods.

A distribution is a histogram on log-spaced buckets (plus exact zeros, count, sum and
max), so percentiles of several of them merged are those of all their values, within a
bucket's width: 10 buckets a decade for differences (a p95 read within ~12%), 20 for
latencies (~6%). Everything here is plain data and pure functions: the server records
into it (:mod:`ctcd.serving.shadow`), the admin API and the deployers read and merge its
JSON form (:func:`Counts.to_dict`, :func:`merge`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LABEL_TASKS = frozenset({"binary", "multiclass"})


@dataclass
class Distribution:
    """Values >= 0 on log buckets from ``10**low`` to ``10**high`` (below: the first
    bucket, above: the last), exact zeros apart; NaN/inf counted as ``nonfinite``."""

    low: int
    high: int
    per_decade: int
    counts: np.ndarray = field(init=False)
    zeros: int = 0
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    nonfinite: int = 0

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.high - self.low) * self.per_decade, dtype=np.int64)

    def _index(self, value: float) -> int:
        at = int((math.log10(value) - self.low) * self.per_decade)
        return min(max(at, 0), len(self.counts) - 1)

    def add_one(self, value: float) -> None:
        if not math.isfinite(value):
            self.nonfinite += 1
            return
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        if value <= 0:
            self.zeros += 1
        else:
            self.counts[self._index(value)] += 1

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(values)
        self.nonfinite += int(values.size - finite.sum())
        values = values[finite]
        if not values.size:
            return
        self.count += int(values.size)
        self.total += float(values.sum())
        self.max = max(self.max, float(values.max()))
        positive = values[values > 0]
        self.zeros += int(values.size - positive.size)
        if positive.size:
            at = np.floor((np.log10(positive) - self.low) * self.per_decade).astype(np.int64)
            self.counts += np.bincount(at.clip(0, len(self.counts) - 1),
                                       minlength=len(self.counts))

    def percentile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1): the centre of its bucket, at most ``max``."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank <= self.zeros:
            return 0.0
        seen = self.zeros
        for at in np.flatnonzero(self.counts):
            seen += int(self.counts[at])
            if seen >= rank:
                centre = 10 ** (self.low + (int(at) + 0.5) / self.per_decade)
                return min(centre, self.max)
        return self.max

    def merge(self, other: Distribution) -> None:
        self.counts += other.counts
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        self.nonfinite += other.nonfinite

    def summary(self, scale: float = 1.0, quantiles: Iterable[float] = (0.5, 0.95, 0.99)
                ) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "mean": self.total / self.count * scale if self.count else None}
        for q in quantiles:
            value = self.percentile(q)
            out[f"p{round(q * 100)}"] = None if value is None else value * scale
        out["max"] = self.max * scale if self.count else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON form (the non-empty buckets only)."""
        at = np.flatnonzero(self.counts)
        return {"buckets": {str(int(i)): int(self.counts[i]) for i in at},
                "zeros": self.zeros, "count": self.count, "total": self.total,
                "max": self.max, "nonfinite": self.nonfinite}

    def load(self, data: Mapping[str, Any]) -> Distribution:
        for index, n in (data.get("buckets") or {}).items():
            self.counts[int(index)] += int(n)
        self.zeros += int(data.get("zeros", 0))
        self.count += int(data.get("count", 0))
        self.total += float(data.get("total", 0.0))
        self.max = max(self.max, float(data.get("max", 0.0)))
        self.nonfinite += int(data.get("nonfinite", 0))
        return self


def differences() -> Distribution:
    return Distribution(-12, 4, 10)


def latencies() -> Distribution:
    return Distribution(-6, 3, 20)


COUNTERS = ("mirrored", "dropped", "answered", "errors", "timeouts", "label_rows",
            "label_agreed", "number_rows", "number_within", "disagreeing")


@dataclass
class Counts:
    """One window's (or the whole shadow's) comparison.

    ``mirrored``: copies queued for the shadow; ``dropped``: copies not queued (the queue
    was full); ``answered`` / ``errors`` / ``timeouts``: how the queued ones ended.
    ``label_*``: rows of label outputs (a classifier's ``predict``, any non-float output)
    and how many the shadow answered the same; ``number_*``: rows of numeric outputs
    (a regressor's, probabilities) and how many were within the tolerance, whose
    absolute differences (the largest of a row) are ``difference``. ``disagreeing``:
    answered requests with any row that differs.
    """

    mirrored: int = 0
    dropped: int = 0
    answered: int = 0
    errors: int = 0
    timeouts: int = 0
    label_rows: int = 0
    label_agreed: int = 0
    number_rows: int = 0
    number_within: int = 0
    disagreeing: int = 0
    difference: Distribution = field(default_factory=differences)
    live_latency: Distribution = field(default_factory=latencies)
    shadow_latency: Distribution = field(default_factory=latencies)

    def merge(self, other: Counts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.difference.merge(other.difference)
        self.live_latency.merge(other.live_latency)
        self.shadow_latency.merge(other.shadow_latency)

    def to_dict(self) -> dict[str, Any]:
        """The figures people read, and ``histograms`` (lossless, for merging)."""
        ended = self.answered + self.errors + self.timeouts
        offered = self.mirrored + self.dropped
        return {
            **{name: getattr(self, name) for name in ("mirrored", "dropped", "answered",
                                                      "errors", "timeouts")},
            "error_rate": (self.errors + self.timeouts) / ended if ended else None,
            "drop_rate": self.dropped / offered if offered else None,
            "labels": {"rows": self.label_rows, "agreed": self.label_agreed,
                       "agreement": (self.label_agreed / self.label_rows
                                     if self.label_rows else None)},
            "numbers": {"rows": self.number_rows, "within_tolerance": self.number_within,
                        "abs_difference": self.difference.summary(quantiles=(0.5, 0.95)),
                        "nonfinite": self.difference.nonfinite},
            "disagreeing_requests": self.disagreeing,
            "latency_ms": {"live": self.live_latency.summary(1000.0),
                           "shadow": self.shadow_latency.summary(1000.0)},
            "histograms": {"difference": self.difference.to_dict(),
                           "live_latency": self.live_latency.to_dict(),
                           "shadow_latency": self.shadow_latency.to_dict()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counts:
        counts = cls()
        for name in ("mirrored", "dropped", "answered", "errors", "timeouts"):
            setattr(counts, name, int(data.get(name, 0)))
        labels, numbers = data.get("labels") or {}, data.get("numbers") or {}
        counts.label_rows, counts.label_agreed = int(labels.get("rows", 0)), int(
            labels.get("agreed", 0))
        counts.number_rows = int(numbers.get("rows", 0))
        counts.number_within = int(numbers.get("within_tolerance", 0))
        counts.disagreeing = int(data.get("disagreeing_requests", 0))
        histograms = data.get("histograms") or {}
        counts.difference.load(histograms.get("difference") or {})
        counts.live_latency.load(histograms.get("live_latency") or {})
        counts.shadow_latency.load(histograms.get("shadow_latency") or {})
        return counts


@dataclass(frozen=True)
class Outcome:
    """One request's comparison: label rows (and how many agreed), numeric rows' absolute
    differences (the largest of each row), how many were within the tolerance."""

    label_rows: int
    label_agreed: int
    differences: np.ndarray
    within: int

    @property
    def disagrees(self) -> bool:
        return self.label_agreed < self.label_rows or self.within < self.differences.size

    @property
    def max_difference(self) -> float | None:
        return float(self.differences.max()) if self.differences.size else None


_EMPTY = np.zeros(0)


def compare(live: Any, shadow: Any, rows: int, task: str | None,
            tolerance: float) -> Outcome:
    """Compare two answers to the same rows, output by output (a dict of named outputs,
    or the default one): labels must be equal, numbers within ``tolerance``; an output
    missing or of another shape disagrees on every row."""
    live_parts = live if isinstance(live, dict) else {"predict": live}
    shadow_parts = shadow if isinstance(shadow, dict) else {"predict": shadow}
    label_rows = label_agreed = within = 0
    differences: list[np.ndarray] = []
    for name, value in live_parts.items():
        a = _rows(value, rows)
        b = _rows(shadow_parts.get(name), rows)
        label = a.dtype.kind not in "fc" or (name == "predict" and task in LABEL_TASKS)
        if b is None or a.shape != b.shape:
            if label:
                label_rows += rows
            else:
                differences.append(np.full(rows, np.inf))
            continue
        if label:
            label_rows += rows
            label_agreed += int(np.all(a == b, axis=1).sum())
            continue
        x, y = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y))
        diff = np.where(np.isnan(diff), np.inf, diff).max(axis=1)
        differences.append(diff)
        within += int((diff <= tolerance).sum())
    joined = np.concatenate(differences) if differences else _EMPTY
    return Outcome(label_rows, label_agreed, joined, within)


def _rows(value: Any, rows: int) -> Any:
    """An output as a 2-D array, one row per input row (None when it is not one)."""
    if value is None:
        return None
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    try:
        array = np.asarray(value)
    except ValueError:
        return None
    if array.ndim == 0 or array.shape[0] != rows:
        return None
    return array.reshape(rows, -1)


def merge(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several ``Counts.to_dict()`` (workers, pods) as one."""
    total = Counts()
    for part in parts:
        total.merge(Counts.from_dict(part))
    return total.to_dict()


def merge_states(own: dict[str, Any], others: Sequence[dict[str, Any] | None],
                 samples: int) -> dict[str, Any]:
    """One view of a shadow over several workers or pods: counts added up, windows by
    their start, the samples of all (at most ``samples``)."""
    parts = [own, *[o for o in others if o and o.get("version") == own.get("version")]]
    windows: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for window in part.get("windows") or []:
            windows.setdefault(window["start"], []).append(window)
    return {
        **own,
        "queued": sum(int(p.get("queued", 0)) for p in parts),
        "live_versions": sorted({v for p in parts for v in p.get("live_versions") or []}),
        "cumulative": merge(p["cumulative"] for p in parts),
        "windows": [{"start": start, "end": group[0]["end"], **merge(group)}
                    for start, group in sorted(windows.items())],
        "samples": [s for p in parts for s in p.get("samples") or []][:samples],
        "parts": len(parts),
    }
