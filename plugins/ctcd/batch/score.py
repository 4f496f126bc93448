"""Score a file, or any stream of frames, in bounded memory: read a chunk -> check its rows
against the signature (bad ones become rejects with a reason) -> predict the good ones in one
call -> write. Peak memory is one chunk (and one Parquet row group of the input), whatever
the input's size.

Every output row carries the model name and version that scored it, the scoring time, its
position in the input (``input_row``) and the input's own columns that are not features (ids,
dates), so predictions join back to what they score. Outputs are written to a temporary
file beside the target and renamed at the end: a failed run leaves the previous file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctcd.batch.model import ScoringModel
from ctcd.batch.rows import check_rows
from ctcd.data.spec import DatasetSpec
from ctcd.errors import InvalidParams
from ctcd.serving.errors import ModelRejectedInput
from ctcd.serving.schema import InputSchema, Table

DEFAULT_CHUNK_ROWS: Final = 100_000
PARQUET: Final = (".parquet", ".pq")
CSV: Final = (".csv", ".csv.gz")
# What a CSV numeric field may say for "no value"; text columns keep these words as text
# (a category may well be "none" or "NA").
_CSV_NULLS: Final = ["", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "<NA>", "#N/A"]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk's predictions (input order) and its rejects (``input_row``, ``reason``, ``data``)."""

    predictions: pd.DataFrame
    rejects: pd.DataFrame


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    chunks: int = 0
    seconds: float = 0.0
    model_name: str = ""
    model_version: str = ""
    output: str | None = None
    rejects: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)  # first field of a reason -> count

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0


def score_chunk(
    model: ScoringModel,
    frame: pd.DataFrame,
    *,
    first_row: int = 0,
    spec: DatasetSpec | None = None,
    text: bool = False,
    scored_at: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ScoredChunk:
    """Score one frame: rows failing the signature (or the spec's ranges and categories, or
    refused by the model) become rejects; the rest are predicted in one call."""
    schema = model.schema
    require_columns(schema, frame.columns, "input")
    rows = len(frame)
    columns = {c.name: frame[c.name].to_numpy() for c in schema.columns}
    checked = check_rows(schema, columns, rows, spec=spec, text=text)
    rejects = dict(checked.rejects)
    kept = checked.kept
    output: dict[str, np.ndarray] = {}
    if checked.table is not None:
        result, refused = predict_isolating(model, checked.table)
        if refused:
            for i, reason in refused.items():
                rejects[int(kept[i])] = reason
            keep = np.ones(len(kept), dtype=bool)
            keep[list(refused)] = False
            kept = kept[keep]
        output = result
    when = scored_at or datetime.now(UTC)
    passthrough = [c for c in frame.columns if c not in set(schema.names)]
    out = frame.iloc[kept][passthrough].reset_index(drop=True) if passthrough else pd.DataFrame(
        index=pd.RangeIndex(len(kept)))
    out.insert(0, "input_row", kept.astype("int64") + first_row)
    for name, values in output.items():
        out[name] = values
    out["model_name"] = _constant(model.name, len(out))
    out["model_version"] = _constant(model.version, len(out))
    out["scored_at"] = pd.Timestamp(when)
    for key, value in (extra or {}).items():
        out[key] = _constant(value, len(out)) if isinstance(value, str) else value
    return ScoredChunk(out, rejects_frame(frame, rejects, first_row, model, when, extra))


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


# -- files -----------------------------------------------------------------------------------


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET):
        return "parquet"
    if name.endswith(CSV):
        return "csv"
    raise InvalidParams(f"{path}: unknown file type; use .parquet/.pq or .csv/.csv.gz")


def default_output(path: Path) -> Path:
    return path.with_name(path.name + ".predictions.parquet")


def default_rejects(output: Path) -> Path:
    name = output.name
    for suffix in (".predictions.parquet", ".parquet", ".csv.gz", ".csv", ".pq"):
        if name.endswith(suffix):
            kind = ".csv" if "csv" in suffix else ".parquet"
            return output.with_name(name[: -len(suffix)] + ".rejects" + kind)
    return output.with_name(name + ".rejects.parquet")


def count_rows(path: Path) -> int | None:
    """Rows in a file, cheaply (Parquet metadata; newlines of a plain CSV), or None."""
    kind, name = file_kind(path), path.name.lower()
    if kind == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if name.endswith(".gz"):
        return None
    lines = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            lines += block.count(b"\n")
    return max(lines - 1, 0)


def read_chunks(path: Path, chunk_rows: int, schema: InputSchema | None = None
                ) -> Iterator[pd.DataFrame]:
    """Frames of at most ``chunk_rows`` rows, read lazily."""
    if file_kind(path) == "parquet":
        source = pq.ParquetFile(path)
        for batch in source.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    text = {c.name for c in (schema.columns if schema else ()) if c.kind == "string"}
    header = pd.read_csv(path, nrows=0).columns
    nulls = {c: ([""] if c in text else _CSV_NULLS) for c in header}
    yield from pd.read_csv(path, chunksize=chunk_rows, keep_default_na=False,
                           na_values=nulls, dtype={c: str for c in text if c in header})


class FrameWriter:
    """Appends frames to a Parquet or CSV file through a temporary file beside it; ``commit``
    renames it into place, ``abort`` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = file_kind(path)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            elif table.schema != self._schema:
                assert self._schema is not None
                table = table.cast(self._schema)
            self._parquet.write_table(table)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(self.tmp, mode="a" if self.rows else "w", header=not self.rows,
                         index=False, compression="gzip" if self.path.name.endswith(".gz")
                         else None)
        self.rows += len(frame)

    def commit(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.rows or self.tmp.exists():
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)


def score_file(
    model: ScoringModel,
    source: Path,
    output: Path | None = None,
    *,
    rejects: Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spec: DatasetSpec | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Score ``source`` (Parquet or CSV) into ``output`` (default
    ``<source>.predictions.parquet``); rejects go to ``rejects`` (default beside the output,
    ``<name>.rejects.parquet``), which is removed when a run has none."""
    if chunk_rows < 1:
        raise InvalidParams(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not source.is_file():
        raise InvalidParams(f"{source}: no such file")
    output = output or default_output(source)
    rejects = rejects or default_rejects(output)
    text = file_kind(source) == "csv"
    file_kind(output)  # refuse unknown output types before any work
    file_kind(rejects)
    summary = Summary(model_name=model.name, model_version=model.version,
                      output=str(output), rejects=str(rejects))
    started, when = time.perf_counter(), datetime.now(UTC)
    out, bad = FrameWriter(output), FrameWriter(rejects)
    last: pd.DataFrame | None = None
    try:
        for frame in read_chunks(source, chunk_rows, model.schema):
            chunk = score_chunk(model, frame, first_row=summary.rows, spec=spec, text=text,
                                scored_at=when)
            if len(chunk.predictions):
                out.write(chunk.predictions)
            last = chunk.predictions
            if len(chunk.rejects):
                bad.write(chunk.rejects)
                for reason in chunk.rejects["reason"]:
                    key = str(reason).split(":", 1)[0]
                    summary.reasons[key] = summary.reasons.get(key, 0) + 1
            summary.rows += len(frame)
            summary.scored += len(chunk.predictions)
            summary.rejected += len(chunk.rejects)
            summary.chunks += 1
            if progress is not None:
                progress(len(frame))
        if not out.rows and last is not None:
            out.write(last)  # every row rejected: an empty file with the columns it has
    except BaseException:
        out.abort()
        bad.abort()
        raise
    out.commit()
    bad.commit()
    if not bad.rows:
        rejects.unlink(missing_ok=True)
        summary.rejects = None
    summary.seconds = time.perf_counter() - started
    return summary
