"""One chunk of rows, checked and predicted: rows failing the signature (or the spec's ranges
and categories, or refused by the model) become rejects with a reason, the rest are
predicted in one call (:func:`predict_chunk`), and the output frames are built
(:func:`assemble`).

Every output row carries the model name and version that scored it, the scoring time, its
position in the input (``input_row``) and the input's own columns that are not features (ids,
dates), so predictions join back to what they score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd

from ctcd.batch.model import ScoringModel
from ctcd.batch.rows import check_rows
from ctcd.data.csv_reader import BadLine
from ctcd.data.spec import DatasetSpec
from ctcd.errors import InvalidParams
from ctcd.serving.errors import ModelRejectedInput
from ctcd.serving.schema import InputSchema, Table

MAX_LINE_CHARS: Final = 10_000  # of an unparsable line kept in its reject


@dataclass(frozen=True)
class Chunk:
    """Rows read (``frame``; ``text``: its values came from text, as in CSV) and the lines
    around them that did not parse (they become rejects)."""

    frame: pd.DataFrame
    text: bool = False
    bad_lines: tuple[BadLine, ...] = ()


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk's predictions (input order) and its rejects (``input_row``, ``reason``, ``data``)."""

    predictions: pd.DataFrame
    rejects: pd.DataFrame

    @property
    def rows(self) -> int:
        """Input rows the chunk stands for: each is scored or rejected."""
        return len(self.predictions) + len(self.rejects)


@dataclass(frozen=True)
class Predicted:
    """A chunk after checking and predicting, before its output frames are built."""

    frame: pd.DataFrame
    first_row: int
    kept: np.ndarray
    output: dict[str, np.ndarray]
    rejects: dict[int, str]
    bad_lines: tuple[BadLine, ...] = ()
    versions: np.ndarray | None = None  # the version that answered each kept row, if known


def predict_chunk(model: ScoringModel, frame: pd.DataFrame, *, first_row: int = 0,
                  spec: DatasetSpec | None = None, text: bool = False,
                  bad_lines: tuple[BadLine, ...] = ()) -> Predicted:
    """Check ``frame``'s rows and predict the good ones in one call."""
    schema = model.schema
    require_columns(schema, frame.columns, "input")
    rows = len(frame)
    columns = {c.name: frame[c.name].to_numpy() for c in schema.columns}
    checked = check_rows(schema, columns, rows, spec=spec, text=text)
    rejects = dict(checked.rejects)
    kept = checked.kept
    output: dict[str, np.ndarray] = {}
    answered: list[np.ndarray] | None = getattr(model.model, "answered", None)
    if answered is not None:
        answered.clear()  # a remote predictor records the version of each row it scores
    if checked.table is not None:
        result, refused = predict_isolating(model, checked.table)
        if refused:
            for i, reason in refused.items():
                rejects[int(kept[i])] = reason
            keep = np.ones(len(kept), dtype=bool)
            keep[list(refused)] = False
            kept = kept[keep]
        output = result
    versions = np.concatenate(answered) if answered else None
    return Predicted(frame, first_row, kept, output, rejects, bad_lines, versions)


def assemble(model: ScoringModel, predicted: Predicted, when: datetime,
             extra: Mapping[str, Any] | None = None) -> ScoredChunk:
    """The output frames of a predicted chunk: predictions (input order, with the input's
    columns that are not features) and rejects (row checks first, then unparsable lines)."""
    frame, kept = predicted.frame, predicted.kept
    passthrough = [c for c in frame.columns if c not in set(model.schema.names)]
    out = frame.iloc[kept][passthrough].reset_index(drop=True) if passthrough else pd.DataFrame(
        index=pd.RangeIndex(len(kept)))
    out.insert(0, "input_row", kept.astype("int64") + predicted.first_row)
    for name, values in predicted.output.items():
        out[name] = values
    out["model_name"] = _constant(model.name, len(out))
    if predicted.versions is not None and len(predicted.versions) == len(out):
        out["model_version"] = predicted.versions
    else:
        out["model_version"] = _constant(model.version, len(out))
    out["scored_at"] = pd.Timestamp(when)
    for key, value in (extra or {}).items():
        out[key] = _constant(value, len(out)) if isinstance(value, str) else value
    rejects = rejects_frame(frame, predicted.rejects, predicted.first_row, model, when, extra)
    if predicted.bad_lines:
        lines = unparsable_frame(predicted.bad_lines, model, when, extra)
        rejects = pd.concat([rejects, lines], ignore_index=True) if len(rejects) else lines
    return ScoredChunk(out, rejects)


def _constant(value: str, rows: int) -> Any:
    """A text column with one value in every row, dictionary-encoded (written once per row
    group in Parquet, not once per row)."""
    codes = np.zeros(rows, dtype="int8")
    return pd.Categorical.from_codes(codes, categories=pd.Index([value]))


def predict_isolating(model: ScoringModel, table: Table) -> tuple[dict[str, np.ndarray],
                                                                  dict[int, str]]:
    """Predict ``table``; when the model refuses it, split it until the refused rows are
    found. Returns prediction columns for the accepted rows and a reason per refused row."""
    try:
        return prediction_columns(model.model.predict_table(table), table.rows), {}
    except ModelRejectedInput as err:
        if table.rows == 1:
            return {}, {0: err.message}
    half = table.rows // 2
    parts, refused = [], {}
    for lo, hi in ((0, half), (half, table.rows)):
        part = Table({n: a[lo:hi] for n, a in table.arrays.items()}, hi - lo)
        columns, bad = predict_isolating(model, part)
        if columns:
            parts.append(columns)
        refused.update({lo + i: reason for i, reason in bad.items()})
    if not parts:
        return {}, refused
    names = parts[0].keys()
    return {n: np.concatenate([p[n] for p in parts]) for n in names}, refused


def prediction_columns(result: Any, rows: int) -> dict[str, np.ndarray]:
    """A model's output as named columns: ``prediction`` (one value per row), or
    ``prediction_<i>`` / the output frame's own column names."""
    if isinstance(result, pd.DataFrame):
        return {f"prediction_{c}": result[c].to_numpy() for c in result.columns}
    array = result.to_numpy() if isinstance(result, pd.Series) else np.asarray(result)
    if array.ndim == 1 and len(array) == rows:
        return {"prediction": array}
    if array.ndim == 2 and len(array) == rows:
        return {f"prediction_{i}": array[:, i] for i in range(array.shape[1])}
    raise ModelRejectedInput(f"the model returned shape {list(array.shape)} for {rows} rows; "
                             "a scoring job needs one prediction per row")


def rejects_frame(frame: pd.DataFrame, rejects: Mapping[int, str], first_row: int,
                  model: ScoringModel, when: datetime,
                  extra: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per reject: its position, the reason, and its input values as JSON."""
    positions = sorted(rejects)
    records = frame.iloc[positions].to_dict(orient="records") if positions else []
    out = pd.DataFrame({
        "input_row": np.asarray(positions, dtype="int64") + first_row,
        "reason": [rejects[p] for p in positions],
        "data": [orjson.dumps(r, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
                 for r in records],
    })
    return _stamp(out, model, when, extra)


def unparsable_frame(lines: tuple[BadLine, ...], model: ScoringModel, when: datetime,
                     extra: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One reject per line that did not parse: no row position (it is not a row), the line
    number in the reason, the line's text as ``data``."""
    out = pd.DataFrame({
        "input_row": pd.array([None] * len(lines), dtype="Int64"),
        "reason": [line.reason for line in lines],
        "data": [line.text[:MAX_LINE_CHARS] for line in lines],
    })
    return _stamp(out, model, when, extra)


def _stamp(out: pd.DataFrame, model: ScoringModel, when: datetime,
           extra: Mapping[str, Any] | None) -> pd.DataFrame:
    out["model_name"] = model.name
    out["model_version"] = model.version
    out["scored_at"] = pd.Timestamp(when)
    for key, value in (extra or {}).items():
        out[key] = value
    return out


def require_columns(schema: InputSchema, columns: Any, what: str) -> None:
    missing = [n for n in schema.names if n not in set(columns)]
    if missing:
        raise InvalidParams(
            f"{what} has no column(s) {missing}; the model expects {list(schema.names)} "
            "(other columns are passed through to the predictions)"
        )
