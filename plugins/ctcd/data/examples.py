"""Partitions of the example data sets besides churn, made from the small data sets that
ship inside scikit-learn (nothing is downloaded):

- ``wine`` (multiclass): the UCI wine recognition data, 178 wines of three cultivars.
- ``diabetes`` (regression): 442 patients' baseline measurements and disease progression.

Each partition resamples the original rows with replacement and adds noise (a share of each
feature's spread, and of the target's for a regression), so partitions are as large as the
data set's row bounds ask, differ day to day, and a model still learns the real relation.
``drift`` shifts the feature distributions (covariate shift) as a changing population would;
``corruption`` injects the same named faults as the churn generator. Deterministic in
(data set, date, rows, drift, corruption).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from ctcd.data.spec import DatasetSpec

NOISE: Final = 0.2  # of each feature's standard deviation
TARGET_NOISE: Final = 0.15  # of the target's, for a regression
MAX_CODES: Final = 10  # a feature with this few distinct values is a code (e.g. sex)
CORRUPTIONS: Final = ("none", "nulls", "out_of_range", "missing_column", "wrong_type")


def _wine() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.data.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
    return frame, bunch.target.astype("int64")


def _diabetes() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True, scaled=False)
    return bunch.data, bunch.target


SOURCES: Final[dict[str, Callable[[], tuple[pd.DataFrame, pd.Series]]]] = {
    "wine": _wine,
    "diabetes": _diabetes,
}


def check_arguments(rows: int, drift: float, corruption: str,
                    corruptions: tuple[str, ...]) -> None:
    """What every demo generator refuses, with a ValueError naming the argument."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be within [0, 1], got {drift}")
    if corruption not in corruptions:
        raise ValueError(f"corruption must be one of {corruptions}, got {corruption!r}")


def _seed(name: str, day: date, drift: float) -> int:
    digest = hashlib.sha256(f"{name}:{day.isoformat()}:{drift:.4f}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def generate(
    spec: DatasetSpec,
    day: date,
    rows: int,
    *,
    drift: float = 0.0,
    corruption: str = "none",
) -> pd.DataFrame:
    """One day's partition of the example data set ``spec`` names."""
    if spec.name not in SOURCES:
        raise ValueError(f"no example generator for data set {spec.name!r}; there are "
                         f"{sorted(SOURCES)} (and churn)")
    check_arguments(rows, drift, corruption, CORRUPTIONS)
    original, target = SOURCES[spec.name]()
    rng = np.random.default_rng(_seed(spec.name, day, drift))
    picked = rng.integers(0, len(original), size=rows)
    columns: dict[str, Any] = {spec.id_column: [f"{day:%Y%m%d}-{i:06d}" for i in range(rows)]}
    if spec.partition_column:
        columns[spec.partition_column] = [day.isoformat()] * rows
    for feature in spec.features:
        source = original[feature.name]
        values = source.to_numpy(dtype="float64")[picked]
        if source.nunique() > MAX_CODES:  # a measure: noise and drift; a code stays as it is
            spread = float(source.std())
            values = values + rng.normal(0.0, NOISE * spread, rows) + drift * spread
        low = feature.min if feature.min is not None else -np.inf
        high = feature.max if feature.max is not None else np.inf
        values = np.clip(values, low, high)
        if feature.type == "integer":
            columns[feature.name] = np.clip(np.round(values), low, high).astype("int64")
        else:
            columns[feature.name] = np.round(values, 4)
    truth = target.to_numpy()[picked]
    if spec.label.classes is None:
        noisy = truth + rng.normal(0.0, TARGET_NOISE * float(target.std()), rows)
        low = spec.label.min if spec.label.min is not None else -np.inf
        high = spec.label.max if spec.label.max is not None else np.inf
        columns[spec.label.name] = np.round(np.clip(noisy, low, high), 2)
    else:
        columns[spec.label.name] = truth.astype("int64")
    return _corrupt(pd.DataFrame(columns), spec, corruption, rng)


def _corrupt(frame: pd.DataFrame, spec: DatasetSpec, corruption: str,
             rng: np.random.Generator) -> pd.DataFrame:
    if corruption == "none":
        return frame
    first = spec.numeric_features[0]
    bad = rng.choice(len(frame), size=max(1, len(frame) // 10), replace=False)
    if corruption == "nulls":
        frame[first] = frame[first].astype("float64")
        frame.loc[bad, first] = np.nan
    elif corruption == "out_of_range":
        frame[first] = frame[first].astype("float64")
        frame.loc[bad, first] = (spec.feature(first).max or 0) * 10 + 1
    elif corruption == "missing_column":
        frame = frame.drop(columns=[first])
    elif corruption == "wrong_type":
        frame[first] = frame[first].map(lambda v: f"~{v}")
    return frame
