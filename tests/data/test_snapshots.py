from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from ctcd.data.snapshots import ingest, split


def test_ingest_writes_a_dated_partition_once(tmp_path: Path) -> None:
    snapshot = ingest(tmp_path, date(2026, 5, 4), 2_000)
    assert snapshot.path.exists()
    assert "snapshot_date=2026-05-04" in str(snapshot.path)
    mtime = snapshot.path.stat().st_mtime_ns
    again = ingest(tmp_path, date(2026, 5, 4), 2_000)
    assert again.path == snapshot.path and again.path.stat().st_mtime_ns == mtime
    assert len(pd.read_parquet(snapshot.path)) == 2_000


def test_variants_do_not_overwrite_the_clean_partition(tmp_path: Path) -> None:
    clean = ingest(tmp_path, date(2026, 5, 4), 2_000)
    corrupt = ingest(tmp_path, date(2026, 5, 4), 2_000, corruption="nulls")
    assert clean.path != corrupt.path
    assert pd.read_parquet(clean.path)["monthly_charges"].notna().all()


def test_split_is_stable_and_disjoint(tmp_path: Path) -> None:
    frame = pd.read_parquet(ingest(tmp_path, date(2026, 5, 4), 5_000).path)
    train, holdout = split(frame, 0.2)
    _, holdout2 = split(frame.sample(frac=1.0, random_state=3), 0.2)
    assert set(holdout["customer_id"]) == set(holdout2["customer_id"])
    assert not set(train["customer_id"]) & set(holdout["customer_id"])
    assert len(train) + len(holdout) == len(frame)
    assert 0.15 < len(holdout) / len(frame) < 0.25
