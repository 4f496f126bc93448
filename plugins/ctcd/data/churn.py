"""A synthetic, realistic customer-churn data set that arrives in dated snapshots (the demo).

Each day is a partition of tens of thousands of customers with numeric and categorical
features and a binary label. The label depends on the features through a fixed logistic
model plus noise, so a model can learn it but not perfectly. Column names, categories and
the label come from the ``churn`` data set spec (``include/datasets/churn.yaml``); only the
generation logic lives here. Two switches serve later stages of the pipeline:

- ``drift``: in [0, 1]; shifts feature distributions (longer support queues, more monthly
  contracts, higher charges) and the label relationship, as a changing market would.
- ``corruption``: a named fault injected into the snapshot (nulls, out-of-range values,
  a missing column, a wrong type, unseen categories), which validation must catch.

Snapshots are deterministic in (date, rows, drift, corruption).
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from ctcd.data.spec import DatasetSpec, load_spec

CORRUPTIONS: Final[tuple[str, ...]] = (
    "none",
    "nulls",
    "out_of_range",
    "missing_column",
    "wrong_type",
    "unseen_category",
)


def churn_spec() -> DatasetSpec:
    return load_spec("churn")


def __getattr__(name: str) -> Any:
    """``FEATURES``, ``LABEL``, ``CATEGORIES``... read from the spec, not kept here."""
    spec = churn_spec()
    derived = {
        "LABEL": spec.label.name,
        "FEATURES": spec.feature_names,
        "NUMERIC_FEATURES": spec.numeric_features,
        "CATEGORICAL_FEATURES": spec.categorical_features,
        "CATEGORIES": spec.categories,
    }
    if name in derived:
        return derived[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _seed(day: date, drift: float) -> int:
    digest = hashlib.sha256(f"{day.isoformat()}:{drift:.4f}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def generate_snapshot(
    day: date,
    rows: int = 20_000,
    *,
    drift: float = 0.0,
    corruption: str = "none",
    spec: DatasetSpec | None = None,
) -> pd.DataFrame:
    """Return one day's snapshot of ``rows`` customers, columns named by the churn spec."""
    from ctcd.data.examples import check_arguments

    check_arguments(rows, drift, corruption, CORRUPTIONS)

    spec = spec or churn_spec()
    categories = spec.categories
    rng = np.random.default_rng(_seed(day, drift))

    contract_p = np.array([0.5 + 0.3 * drift, 0.3 - 0.15 * drift, 0.2 - 0.15 * drift])
    contract = rng.choice(categories["contract"], size=rows, p=contract_p / contract_p.sum())
    payment = rng.choice(categories["payment_method"], size=rows, p=[0.35, 0.25, 0.25, 0.15])
    internet = rng.choice(categories["internet_service"], size=rows, p=[0.15, 0.4, 0.45])
    region = rng.choice(categories["region"], size=rows)

    tenure = np.clip(rng.gamma(2.0, 14.0 * (1 - 0.4 * drift), rows), 0, 72).round()
    base_charge = np.select(
        [internet == "none", internet == "dsl", internet == "fiber"], [25.0, 55.0, 80.0]
    )
    monthly = np.clip(base_charge * (1 + 0.25 * drift) + rng.normal(0, 12, rows), 18, 150)
    total = np.round(monthly * np.maximum(tenure, 1) * rng.uniform(0.9, 1.05, rows), 2)
    support = rng.poisson(1.2 + 2.0 * drift + (internet == "fiber") * 0.6, rows)
    age = np.clip(rng.normal(45, 14, rows), 18, 90).round()
    usage = np.clip(rng.lognormal(2.5 + 0.3 * (internet == "fiber"), 0.6, rows), 0, 500)
    late = rng.poisson(0.4 + 0.6 * (payment == "electronic-check"), rows)

    logit = (
        -1.2
        + 1.6 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        - 0.045 * tenure
        + 0.018 * (monthly - 60)
        + 0.38 * support
        + 0.55 * late
        + 0.5 * (payment == "electronic-check")
        + 0.35 * (internet == "fiber")
        - 0.008 * (age - 45)
        + drift * (0.9 - 0.03 * tenure)
    )
    prob = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.6, rows))))
    label = (rng.uniform(size=rows) < prob).astype("int64")

    head: dict[str, Any] = {spec.id_column: [f"{day:%Y%m%d}-{i:06d}" for i in range(rows)]}
    if spec.partition_column:
        head[spec.partition_column] = [day.isoformat()] * rows
    frame = pd.DataFrame(
        {
            **head,
            "tenure_months": tenure.astype("int64"),
            "monthly_charges": monthly.round(2),
            "total_charges": total,
            "support_calls": support.astype("int64"),
            "age": age.astype("int64"),
            "data_usage_gb": usage.round(3),
            "late_payments": late.astype("int64"),
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "region": region,
            spec.label.name: label,
        }
    )
    return _corrupt(frame, corruption, rng)


def _corrupt(frame: pd.DataFrame, corruption: str, rng: np.random.Generator) -> pd.DataFrame:
    if corruption == "none":
        return frame
    bad = rng.choice(len(frame), size=max(1, len(frame) // 10), replace=False)
    if corruption == "nulls":
        frame.loc[bad, "monthly_charges"] = np.nan
        frame.loc[bad[: len(bad) // 2], "contract"] = pd.NA
    elif corruption == "out_of_range":
        frame.loc[bad, "age"] = -5
        frame.loc[bad, "tenure_months"] = 999
    elif corruption == "missing_column":
        frame = frame.drop(columns=["support_calls"])
    elif corruption == "wrong_type":
        frame["monthly_charges"] = frame["monthly_charges"].map(lambda v: f"${v:.2f}")
    elif corruption == "unseen_category":
        frame.loc[bad, "contract"] = "lifetime"
    return frame
