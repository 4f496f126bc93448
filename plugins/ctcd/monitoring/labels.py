"""Delayed labels: the truth about served rows, learnt later, for live accuracy.

A served row is known by its **row id**: a hash of its feature values in the data set
spec's order (numbers to 7 significant digits, so ``5``, ``5.0`` and a float32 round trip
agree; text as is; nulls as ``null``). Whoever scored rows and later learns their outcome
(the demo producer, a CRM export, a nightly job) computes the same id with ``row_ids`` on
the rows it sent, without any help from the model server, and records the labels.

Labels live in a SQLite file (default ``$CTCD_HOME/monitoring/labels.sqlite``)::

    CREATE TABLE labels (row_id TEXT PRIMARY KEY, label TEXT NOT NULL, ts TEXT NOT NULL)

``label`` is the class as text (``"0"``/``"1"``; integral floats as integers); ``ts`` the
ISO-8601 UTC time it was recorded. A later label for the same row replaces the earlier one.
``record_labels`` writes them from a frame holding the features and the label column.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctcd.monitoring.reference import label

if TYPE_CHECKING:
    import pandas as pd

    from ctcd.data.spec import DatasetSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    row_id TEXT PRIMARY KEY, label TEXT NOT NULL, ts TEXT NOT NULL
);
"""


def default_labels_path() -> Path:
    from ctcd.settings import get_settings

    return get_settings().home / "monitoring" / "labels.sqlite"


def row_ids(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """The row id of each row of ``frame`` (which holds at least the spec's features)."""
    names = list(spec.feature_names)
    numeric = [spec.feature(n).is_numeric for n in names]
    ids = []
    for values in frame[names].itertuples(index=False, name=None):
        text = "\x1f".join(_canonical(v, is_num) for v, is_num in zip(values, numeric,
                                                                      strict=True))
        ids.append(hashlib.sha256(text.encode()).hexdigest()[:24])
    return ids


def record_labels(frame: pd.DataFrame, spec: DatasetSpec, path: Path | None = None) -> int:
    """Record the label column of ``frame`` for its rows; returns how many were written."""
    if spec.label.name not in frame.columns:
        raise ValueError(f"the frame has no label column {spec.label.name!r}")
    return write_labels(zip(row_ids(frame, spec), frame[spec.label.name].tolist(),
                            strict=True), path)


def write_labels(pairs: Iterable[tuple[str, Any]], path: Path | None = None) -> int:
    path = path or default_labels_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat()
    rows = [(row_id, label(value), now) for row_id, value in pairs]
    with sqlite3.connect(path, timeout=30) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?)", rows)
    return len(rows)


def read_labels(ids: Sequence[str], path: Path | None = None) -> dict[str, str]:
    """The recorded label of each of ``ids`` that has one."""
    path = path or default_labels_path()
    if not path.exists() or not ids:
        return {}
    found: dict[str, str] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(db.execute(
                f"SELECT row_id, label FROM labels WHERE row_id IN ({marks})", chunk))
    return found


def live_accuracy(ids: Sequence[str], predictions: Sequence[Any],
                  labels: Mapping[str, str]) -> tuple[float | None, int]:
    """Share of labelled rows the served model got right, and how many rows were labelled."""
    pairs = [(labels[i], label(p)) for i, p in zip(ids, predictions, strict=True) if i in labels]
    if not pairs:
        return None, 0
    return sum(truth == guess for truth, guess in pairs) / len(pairs), len(pairs)


def live_metric(task: str, truths: Sequence[str], guesses: Sequence[Any]
                ) -> tuple[float | None, int]:
    """The task's live metric (``ctcd.models.tasks.LIVE_METRIC``: accuracy, macro F1 or
    RMSE) of ``guesses`` against the recorded ``truths``, and how many rows it covers."""
    if not truths:
        return None, 0
    if task == "regression":
        errors = [float(t) - float(g) for t, g in zip(truths, guesses, strict=True)]
        return math.sqrt(sum(e * e for e in errors) / len(errors)), len(errors)
    texts = [label(g) for g in guesses]
    if task == "multiclass":
        from sklearn.metrics import f1_score

        return float(f1_score(list(truths), texts, average="macro", zero_division=0)), len(texts)
    return sum(t == g for t, g in zip(truths, texts, strict=True)) / len(texts), len(texts)


def live_metric_of(task: str, ids: Sequence[str], predictions: Sequence[Any],
                   labels: Mapping[str, str]) -> tuple[float | None, int]:
    """``live_metric`` over the served rows whose label has arrived."""
    pairs = [(labels[i], p) for i, p in zip(ids, predictions, strict=True) if i in labels]
    return live_metric(task, [t for t, _ in pairs], [p for _, p in pairs])


def _canonical(value: Any, is_numeric: bool) -> str:
    if value is None:
        return "null"
    if is_numeric:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"s:{value}"
        return "null" if math.isnan(number) else f"{number:.7g}"
    if isinstance(value, float) and math.isnan(value):
        return "null"
    return str(value)
