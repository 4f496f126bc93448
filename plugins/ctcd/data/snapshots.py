"""The snapshot store: dated Parquet partitions of the churn data set under the state dir.

``ingest`` writes one day's partition (idempotently: a re-run of the same day with the same
switches leaves the same file), and ``split`` cuts it into a training set and a holdout by
a stable hash of the customer id, so the champion and the challenger are always compared
on the same rows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from ctcd.data.churn import generate_snapshot


@dataclass(frozen=True)
class Snapshot:
    day: date
    path: Path
    rows: int


def partition_path(root: Path, day: date, drift: float = 0.0, corruption: str = "none") -> Path:
    variant = "" if drift == 0 and corruption == "none" else f"/variant=drift{drift:g}-{corruption}"
    return root / "churn" / f"snapshot_date={day.isoformat()}{variant}" / "part-0.parquet"


def ingest(
    root: Path, day: date, rows: int, *, drift: float = 0.0, corruption: str = "none"
) -> Snapshot:
    """Materialise one day's snapshot as Parquet (atomically) and return where it is."""
    path = partition_path(root, day, drift, corruption)
    if path.exists():
        existing = pd.read_parquet(path, columns=["customer_id"])
        if len(existing) == rows:
            return Snapshot(day=day, path=path, rows=rows)
    frame = generate_snapshot(day, rows, drift=drift, corruption=corruption)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return Snapshot(day=day, path=path, rows=len(frame))


def in_holdout(customer_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=4).digest(), "big")
    return bucket / 2**32 < fraction


def split(frame: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout), by a stable hash of ``customer_id``."""
    mask = frame["customer_id"].map(lambda cid: in_holdout(str(cid), holdout_fraction))
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
