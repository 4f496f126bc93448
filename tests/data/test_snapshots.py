from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ctcd.data.churn import generate_snapshot
from ctcd.data.snapshots import atomic_path, snapshot_path, split


def test_split_is_stable_and_disjoint() -> None:
    frame = generate_snapshot(date(2026, 5, 4), 5_000)
    train, holdout = split(frame, 0.2, "customer_id")
    _, holdout2 = split(frame.sample(frac=1.0, random_state=3), 0.2, "customer_id")
    assert set(holdout["customer_id"]) == set(holdout2["customer_id"])
    assert not set(train["customer_id"]) & set(holdout["customer_id"])
    assert len(train) + len(holdout) == len(frame)
    assert 0.15 < len(holdout) / len(frame) < 0.25


def test_atomic_path_keeps_nothing_of_a_failed_write(tmp_path: Path) -> None:
    target = snapshot_path(tmp_path, "churn", date(2026, 5, 4))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in target.parent.iterdir()] == [
        "snapshot.parquet"
    ]
