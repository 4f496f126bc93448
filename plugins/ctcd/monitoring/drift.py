"""Drift of served values against the training reference, per feature and overall.

- PSI (population stability index) over the reference bins: categories (plus an
  ``(unseen)`` bucket for values the training data never had) or the numeric bins, each
  with a ``(missing)`` bucket for nulls. ``PSI = sum((cur - ref) * ln(cur / ref))`` with
  shares floored at ``EPSILON`` so an empty bin counts as rare, not impossible.
  Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 drifted.
- For numerics also the two-sample Kolmogorov-Smirnov test and the Wasserstein distance
  (in reference standard deviations), against the reference's quantile sketch (1,000
  points, so the KS p-value is that of a 1,000-row reference sample: conservative).

A numeric feature drifts when its PSI reaches ``psi`` or when KS both rejects at
``ks_alpha`` and its statistic reaches ``ks_statistic`` (with thousands of rows KS rejects
differences too small to matter; the statistic floor keeps it to real shifts). A
categorical feature or the predictions drift when their PSI reaches ``psi``. Served data
has drifted when at least ``drifted_share`` of the features drifted, or the predictions did.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ctcd.monitoring.reference import bin_index, flatten_predictions, label

if TYPE_CHECKING:
    import pandas as pd

EPSILON = 1e-4
UNSEEN = "(unseen)"
MISSING = "(missing)"
PREDICTION = "(prediction)"


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks_alpha: float = 0.01
    ks_statistic: float = 0.1
    drifted_share: float = 0.3


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # "numeric" or "categorical"
    count: int  # served values, nulls included
    psi: float | None
    drifted: bool
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    wasserstein: float | None = None  # in reference standard deviations
    null_share: float = 0.0
    unseen_share: float = 0.0
    bins: tuple[str, ...] = ()
    reference_shares: tuple[float, ...] = ()
    current_shares: tuple[float, ...] = ()

    def row(self) -> dict[str, Any]:
        """The table row (no per-bin shares)."""
        data = asdict(self)
        for key in ("bins", "reference_shares", "current_shares"):
            data.pop(key)
        return data


@dataclass(frozen=True)
class DriftResult:
    samples: int
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    drifted_share: float
    drift: bool
    reasons: tuple[str, ...] = field(default=())

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]


def psi(reference: Any, current: Any, epsilon: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(np.asarray(reference, dtype="float64"), epsilon)
    cur = np.maximum(np.asarray(current, dtype="float64"), epsilon)
    if ref.shape != cur.shape:
        raise ValueError(f"PSI needs shares over the same bins: {ref.shape} vs {cur.shape}")
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_drift(name: str, reference: Mapping[str, Any], values: Any,
                  thresholds: Thresholds) -> FeatureDrift:
    array = np.asarray(values, dtype="float64").reshape(-1)
    nulls = np.isnan(array)
    present = array[~nulls]
    edges = list(reference.get("edges") or [])
    bins = _numeric_bins(edges)
    if array.size == 0:
        return FeatureDrift(name, "numeric", 0, None, False, bins=bins)
    ref_null = reference["nulls"] / reference["count"] if reference.get("count") else 0.0
    ref_shares = [s * (1 - ref_null) for s in reference.get("shares") or []] + [ref_null]
    counts: list[int] = (
        np.bincount(bin_index(present, edges), minlength=len(edges) + 1).tolist() if edges else []
    )
    cur_shares = [c / array.size for c in counts] + [float(nulls.mean())]
    ks_stat = ks_p = distance = None
    sketch = np.asarray(reference.get("sketch") or [], dtype="float64")
    if present.size and sketch.size:
        from scipy.stats import ks_2samp, wasserstein_distance

        # The exact distribution is slow and often fails to converge at these sizes.
        test = ks_2samp(present, sketch, method="asymp" if present.size > 200 else "auto")
        ks_stat, ks_p = float(test.statistic), float(test.pvalue)
        distance = float(wasserstein_distance(present, sketch))
        if reference.get("std"):
            distance /= float(reference["std"])
    value = psi(ref_shares, cur_shares)
    drifted = value >= thresholds.psi or (
        ks_p is not None and ks_stat is not None
        and ks_p < thresholds.ks_alpha and ks_stat >= thresholds.ks_statistic
    )
    return FeatureDrift(name, "numeric", int(array.size), value, bool(drifted), ks_stat, ks_p,
                        distance, float(nulls.mean()), 0.0, bins, _tuple(ref_shares),
                        _tuple(cur_shares))


def categorical_drift(name: str, reference: Mapping[str, Any], values: Any,
                      thresholds: Thresholds) -> FeatureDrift:
    import pandas as pd

    series = pd.Series(values, dtype="object")
    nulls = series.isna()
    labels = series[~nulls].map(label)
    known = list(reference["shares"])
    ref_null = reference["nulls"] / reference["count"] if reference.get("count") else 0.0
    ref_shares = [reference["shares"][c] * (1 - ref_null) for c in known] + [0.0, ref_null]
    bins = (*known, UNSEEN, MISSING)
    if series.size == 0:
        return FeatureDrift(name, "categorical", 0, None, False, bins=bins)
    counts = labels.value_counts()
    unseen = float(counts[~counts.index.isin(known)].sum()) / series.size
    cur_shares = [float(counts.get(c, 0)) / series.size for c in known]
    cur_shares += [unseen, float(nulls.mean())]
    value = psi(ref_shares, cur_shares)
    return FeatureDrift(name, "categorical", int(series.size), value, value >= thresholds.psi,
                        null_share=float(nulls.mean()), unseen_share=unseen, bins=bins,
                        reference_shares=_tuple(ref_shares), current_shares=_tuple(cur_shares))


def compare(reference: Mapping[str, Any], frame: pd.DataFrame, predictions: Any,
            thresholds: Thresholds | None = None) -> DriftResult:
    """Every feature of the reference and the predictions against served rows. A numeric
    value that is not a number counts as missing."""
    import pandas as pd

    thresholds = thresholds or Thresholds()
    features = []
    for name, ref in reference["features"].items():
        column = frame[name].to_numpy() if name in frame.columns else np.full(len(frame), None)
        if ref["kind"] == "numeric":
            if column.dtype == object:  # nulls, or text from a model without a signature
                column = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy("float64")
            features.append(numeric_drift(name, ref, column, thresholds))
        else:
            features.append(categorical_drift(name, ref, column, thresholds))
    prediction = None
    ref_pred = reference.get("predictions")
    if ref_pred and predictions is not None:
        flat = flatten_predictions(predictions)
        prediction = (
            numeric_drift(PREDICTION, ref_pred, flat.astype("float64"), thresholds)
            if ref_pred["kind"] == "numeric"
            else categorical_drift(PREDICTION, ref_pred, flat, thresholds)
        )
    drifted = [f for f in features if f.drifted]
    share = len(drifted) / len(features) if features else 0.0
    reasons = []
    if features and share >= thresholds.drifted_share:
        worst = sorted(drifted, key=lambda f: -(f.psi or 0.0))
        named = ", ".join(f"{f.name} (PSI {f.psi:.2f})" for f in worst[:5])
        reasons.append(f"{len(drifted)} of {len(features)} features drifted "
                       f"({share:.0%} >= {thresholds.drifted_share:.0%}): {named}")
    if prediction is not None and prediction.drifted:
        reasons.append(f"the prediction distribution drifted (PSI {prediction.psi:.2f})")
    return DriftResult(len(frame), tuple(features), prediction, share, bool(reasons),
                       tuple(reasons))


def _numeric_bins(edges: list[float]) -> tuple[str, ...]:
    if not edges:
        return (MISSING,)
    inner = [f"({a:g}, {b:g}]" for a, b in itertools.pairwise(edges)]
    return (f"<= {edges[0]:g}", *inner, f"> {edges[-1]:g}", MISSING)


def _tuple(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
