"""Schema checks of a churn snapshot: columns, types, nulls, ranges, categories.

Fails closed: every failed check is listed in a JSON report kept under the state dir,
and the caller gets a DataValidationError that names the columns at fault.
(Great Expectations suites replace these checks in a later stage; the report format and
the fail-closed contract stay.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pandas as pd
from pandas.api import types as ptypes

from ctcd.data.churn import CATEGORICAL_FEATURES, CATEGORIES, LABEL, NUMERIC_FEATURES
from ctcd.errors import DataValidationError

RANGES: Final[dict[str, tuple[float, float]]] = {
    "tenure_months": (0, 120),
    "monthly_charges": (0, 1_000),
    "total_charges": (0, 150_000),
    "support_calls": (0, 100),
    "age": (16, 110),
    "data_usage_gb": (0, 10_000),
    "late_payments": (0, 100),
}
MIN_ROWS: Final = 1_000


@dataclass
class Check:
    name: str
    column: str | None
    passed: bool
    detail: str


@dataclass
class ValidationReport:
    source: str
    rows: int
    checked_at: str
    checks: list[Check] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "success": self.success}, indent=2)


def check_frame(frame: pd.DataFrame, source: str) -> ValidationReport:
    report = ValidationReport(
        source=source, rows=len(frame), checked_at=datetime.now(UTC).isoformat()
    )
    add = report.checks.append
    add(Check("row_count", None, len(frame) >= MIN_ROWS, f"{len(frame)} rows (need >= {MIN_ROWS})"))
    for column in (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, LABEL):
        if column not in frame.columns:
            add(Check("column_present", column, False, "column is missing"))
            continue
        series = frame[column]
        nulls = int(series.isna().sum())
        add(Check("not_null", column, nulls == 0, f"{nulls} null values"))
        if column in NUMERIC_FEATURES or column == LABEL:
            numeric = ptypes.is_numeric_dtype(series) and not ptypes.is_bool_dtype(series)
            add(Check("numeric_type", column, numeric, f"dtype {series.dtype}"))
            if not numeric:
                continue
        if column in RANGES:
            low, high = RANGES[column]
            outside = int(((series < low) | (series > high)).sum())
            add(
                Check("in_range", column, outside == 0, f"{outside} values outside [{low}, {high}]")
            )
        elif column in CATEGORIES:
            unseen = sorted(set(series.dropna().astype(str)) - set(CATEGORIES[column]))
            add(Check("known_categories", column, not unseen, f"unexpected values {unseen[:5]}"))
        elif column == LABEL:
            labels = sorted(set(series.dropna().tolist()))
            add(Check("binary_label", column, set(labels) <= {0, 1}, f"label values {labels[:5]}"))
    return report


def validate_snapshot(path: Path, reports_dir: Path) -> Path:
    """Validate a Parquet snapshot; return the report path, or raise naming what failed."""
    frame = pd.read_parquet(path)
    report = check_frame(frame, str(path))
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    report_path = reports_dir / f"validation-{path.parent.name}-{stamp}.json"
    report_path.write_text(report.to_json())
    if not report.success:
        lines = "; ".join(
            f"{c.column or 'table'}: {c.name} failed ({c.detail})" for c in report.failures
        )
        raise DataValidationError(
            f"Snapshot {path} failed validation, nothing was trained: {lines}. "
            f"Fix the source data or re-ingest; the full report is at {report_path}.",
            report_path=str(report_path),
        )
    return report_path
