"""Local snapshots: the copy of one partition every task after ``ingest`` reads.

A source writes a partition here once (atomically, batch by batch), so validation,
training, evaluation and verification all see the same rows, however the source changes
afterwards. What ingest found wrong with the files (a file with none of the data set's
columns) is kept in the snapshot's metadata, for validation to say (:func:`notes_of`).
``split`` cuts a snapshot into a training set and a holdout by a stable hash
of the id column, so the champion and the challenger are always compared on the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd

NOTES = "ctcd.notes"  # Parquet key-value metadata: a JSON list of messages


def notes_of(snapshot: Path) -> list[str]:
    """What ingest found wrong with the files of ``snapshot``."""
    import pyarrow.parquet as pq

    notes = (pq.ParquetFile(snapshot).metadata.metadata or {}).get(NOTES.encode())
    return [str(n) for n in json.loads(notes)] if notes else []


def snapshot_path(data_dir: Path, dataset: str, day: date) -> Path:
    return data_dir / dataset / f"date={day.isoformat()}" / "snapshot.parquet"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path``, moved onto it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def in_holdout(row_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.blake2b(row_id.encode(), digest_size=4).digest(), "big")
    return bucket / 2**32 < fraction


def split(
    frame: pd.DataFrame, holdout_fraction: float, id_column: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout), by a stable hash of ``id_column``."""
    mask = frame[id_column].map(lambda rid: in_holdout(str(rid), holdout_fraction))
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)
