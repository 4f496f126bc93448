"""Decoding the request log as the model server really writes it (``RequestLog``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from ctcd.monitoring.served import max_rowid, read_window
from ctcd.serving.protocols import ScoringRequest
from ctcd.serving.reqlog import RequestLog
from ctcd.serving.schema import Table

FEATURES = ("a", "b")


def _log(path: Path, entries: list[tuple[str, ScoringRequest, object]]) -> None:
    log = RequestLog(path, sample_rate=1.0, flush_seconds=0.01)
    for version, request, output in entries:
        log.offer(model_name="m", version=version, protocol="mlflow", request_id="r",
                  request=request, output=output, latency_ms=1.0)
    log.close()


def _table(a: list[float], b: list[str]) -> ScoringRequest:
    return ScoringRequest(table=Table({"a": np.asarray(a), "b": np.asarray(b, dtype=object)},
                                      len(a)))


def test_every_input_shape_decodes_to_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    records = pd.DataFrame({"a": [3.0], "b": ["z"]})
    _log(path, [
        ("1", _table([1.0, 2.0], ["x", "y"]), np.array([1, 0])),       # column signature
        ("1", ScoringRequest(frame=records), pd.Series([1])),           # records, no signature
        ("1", ScoringRequest(frame=np.array([[4.0, 5.0]])), [[0.3, 0.7]]),  # rows, no names
        ("1", ScoringRequest(table=Table({"": np.array([[6.0, 7.0]])}, 1)), np.array([0])),
        ("2", _table([9.0], ["other version"]), np.array([1])),
    ])
    window = read_window(path, "m", "1", FEATURES)
    assert window.requests == 4 and window.skipped == 0 and window.rows == 5
    rows = sorted(zip(window.frame["a"].tolist(), window.frame["b"].astype(str).tolist(),
                      window.predictions, strict=True))
    assert rows[:3] == [(1.0, "x", 1), (2.0, "y", 0), (3.0, "z", 1)]
    assert rows[3][:2] == (4.0, "5.0") and rows[3][2] == [0.3, 0.7]
    assert rows[4][:2] == (6.0, "7.0")
    assert window.last_rowid == 4 and window.first_ts is not None


def test_window_starts_after_the_watermark_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    _log(path, [("1", _table([float(i)], ["x"]), np.array([0])) for i in range(10)])
    assert max_rowid(path) == 10
    later = read_window(path, "m", "1", FEATURES, after_rowid=6)
    assert sorted(later.frame["a"]) == [6.0, 7.0, 8.0, 9.0] and later.last_rowid == 10
    newest = read_window(path, "m", "1", FEATURES, max_rows=3)
    assert sorted(newest.frame["a"]) == [7.0, 8.0, 9.0]


def test_undecodable_requests_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"
    _log(path, [("1", _table([1.0], ["x"]), np.array([1]))])
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO requests (ts, model_name, model_version, protocol, rows,"
                       " inputs, outputs, latency_ms) VALUES ('t', 'm', '1', 'mlflow', ?, ?, ?,"
                       " 1.0)", [
            (1, "not json", "[1]"),
            (2, '{"a": [1.0, 2.0], "b": ["x", "y"]}', "[1]"),  # outputs short of the rows
            (1, '{"a": [1.0]}', "[1]"),                         # a feature missing
        ])
    window = read_window(path, "m", "1", FEATURES)
    assert window.requests == 1 and window.skipped == 3 and window.rows == 1


def test_a_missing_log_is_an_empty_window(tmp_path: Path) -> None:
    window = read_window(tmp_path / "absent.sqlite", "m", "1", FEATURES)
    assert window.rows == 0 and window.last_rowid is None
    assert max_rowid(tmp_path / "absent.sqlite") == 0
