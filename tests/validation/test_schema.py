from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from ctcd.data.churn import CORRUPTIONS
from ctcd.data.snapshots import ingest
from ctcd.errors import DataValidationError
from ctcd.validation.schema import validate_snapshot

EXPECTED_COLUMN = {
    "nulls": "monthly_charges",
    "out_of_range": "age",
    "missing_column": "support_calls",
    "wrong_type": "monthly_charges",
    "unseen_category": "contract",
}


def test_clean_snapshot_passes_and_keeps_a_report(tmp_path: Path) -> None:
    snapshot = ingest(tmp_path / "data", date(2026, 6, 1), 3_000)
    report = validate_snapshot(snapshot.path, tmp_path / "reports")
    content = json.loads(report.read_text())
    assert content["success"] is True
    assert content["rows"] == 3_000
    assert all(check["passed"] for check in content["checks"])


@pytest.mark.parametrize("corruption", [c for c in CORRUPTIONS if c != "none"])
def test_corrupt_snapshot_fails_closed_naming_the_column(tmp_path: Path, corruption: str) -> None:
    snapshot = ingest(tmp_path / "data", date(2026, 6, 1), 3_000, corruption=corruption)
    with pytest.raises(DataValidationError) as caught:
        validate_snapshot(snapshot.path, tmp_path / "reports")
    assert EXPECTED_COLUMN[corruption] in caught.value.message
    assert caught.value.report_path is not None
    report = json.loads(Path(caught.value.report_path).read_text())
    assert report["success"] is False
    assert any(
        check["column"] == EXPECTED_COLUMN[corruption] and not check["passed"]
        for check in report["checks"]
    )
