"""Served traffic from the model server's request log (``ctcd.serving.reqlog``).

The log is a SQLite table ``requests``, one row per sampled request, whose ``inputs`` are
JSON in the shape the request was checked into:

- ``{column: [values]}`` when the model has a column signature (every protocol: MLflow
  ``dataframe_split``/``dataframe_records``/``inputs``/CSV and KServe V2 end up as columns);
- ``{"": [[...], ...]}`` for a tensor signature;
- a list of records (``[{column: value}]``) or of rows (``[[...]]``) when the model has no
  signature the server understands.

Rows and tensors without column names are matched to the data set's features in spec
order. A request whose inputs or outputs cannot be decoded, or whose row counts disagree,
is skipped and counted, never guessed at.

The window is read by SQLite ``rowid`` (the log only appends), so a request written late by
the server's background writer is still read by the next check.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ServedWindow:
    """The decoded rows of one model version's sampled requests in a rowid window."""

    frame: pd.DataFrame  # one column per feature, one row per scored row
    predictions: list[Any]  # the model's output for each row
    requests: int  # requests decoded
    skipped: int  # requests that could not be decoded
    first_rowid: int | None
    last_rowid: int | None  # the next window starts after it
    first_ts: str | None
    last_ts: str | None

    @property
    def rows(self) -> int:
        return len(self.frame)


def default_log_path() -> Path:
    """Where model servers write their request log unless told otherwise."""
    import os

    from ctcd.settings import get_settings

    configured = os.environ.get("CTCD_SERVER_REQUEST_LOG_PATH")
    return Path(configured) if configured else get_settings().home / "serving" / "requests.sqlite"


def read_window(
    path: Path,
    model_name: str,
    version: str,
    features: Sequence[str],
    *,
    after_rowid: int = 0,
    max_rows: int = 50_000,
) -> ServedWindow:
    """Requests of ``model_name`` ``version`` logged after ``after_rowid``: the newest ones,
    up to ``max_rows`` scored rows (older ones in the window are passed over)."""
    import pandas as pd

    columns: dict[str, list[Any]] = {name: [] for name in features}
    predictions: list[Any] = []
    requests = skipped = 0
    first = last = None
    first_ts = last_ts = None
    for rowid, ts, rows, inputs, outputs in _newest(path, model_name, version, after_rowid,
                                                    max_rows):
        last = last if last is not None else rowid
        last_ts = last_ts if last_ts is not None else ts
        first, first_ts = rowid, ts
        decoded = _decode(inputs, outputs, rows, features)
        if decoded is None:
            skipped += 1
            continue
        requests += 1
        for name in features:
            columns[name].extend(decoded[0][name])
        predictions.extend(decoded[1])
    frame = pd.DataFrame(columns, columns=list(features))
    return ServedWindow(frame, predictions, requests, skipped, first, last, first_ts, last_ts)


def max_rowid(path: Path) -> int:
    """The newest rowid in the log (0 when it is empty or absent)."""
    if not path.exists():
        return 0
    with _connect(path) as db:
        row = db.execute("SELECT max(rowid) FROM requests").fetchone()
    return int(row[0] or 0)


def _newest(path: Path, model_name: str, version: str, after_rowid: int,
            max_rows: int) -> list[tuple[int, str, int, str, str]]:
    """Newest first, until ``max_rows`` rows are covered."""
    if not path.exists():
        return []
    taken: list[tuple[int, str, int, str, str]] = []
    covered = 0
    with _connect(path) as db:
        cursor = db.execute(
            "SELECT rowid, ts, rows, inputs, outputs FROM requests WHERE model_name = ? AND "
            "model_version = ? AND rowid > ? ORDER BY rowid DESC",
            (model_name, str(version), after_rowid),
        )
        for record in cursor:
            taken.append(record)
            covered += int(record[2])
            if covered >= max_rows:
                break
    return taken


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: the model servers own the file (WAL mode lets them keep writing).
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _decode(inputs: str, outputs: str, rows: int,
            features: Sequence[str]) -> tuple[dict[str, list[Any]], list[Any]] | None:
    try:
        raw_in, raw_out = json.loads(inputs), json.loads(outputs)
    except (TypeError, ValueError):
        return None
    table = _columns(raw_in, features)
    output = _outputs(raw_out)
    if table is None or output is None:
        return None
    lengths = {len(values) for values in table.values()} | {len(output)}
    if lengths != {rows}:
        return None
    return table, output


def _columns(raw: Any, features: Sequence[str]) -> dict[str, list[Any]] | None:
    if isinstance(raw, dict) and set(raw) == {""}:
        raw = raw[""]  # a tensor signature: rows of values in feature order
    if isinstance(raw, dict):
        if not all(isinstance(raw.get(name), list) for name in features):
            return None
        return {name: raw[name] for name in features}
    if isinstance(raw, list) and all(isinstance(r, dict) for r in raw):
        return {name: [r.get(name) for r in raw] for name in features}
    if isinstance(raw, list) and all(isinstance(r, list) for r in raw):
        if any(len(r) != len(features) for r in raw):
            return None
        return {name: [r[i] for r in raw] for i, name in enumerate(features)}
    return None


def _outputs(raw: Any) -> list[Any] | None:
    if isinstance(raw, dict):  # e.g. {"predictions": [...]} or one list per output
        lists = [v for v in raw.values() if isinstance(v, list)]
        raw = lists[0] if lists else None
    if not isinstance(raw, list):
        return None
    return [np.nan if value is None else value for value in raw]
