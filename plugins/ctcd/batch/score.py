"""Score a file, or any stream of frames, in bounded memory: read a chunk -> check its rows
against the signature (bad ones become rejects with a reason) -> predict the good ones in one
call -> write. The three steps overlap (:class:`Pipelined`): a reader thread reads ahead,
a scoring thread checks and predicts, and the caller's thread builds the output and writes
it, with a few chunks at most between them, so peak memory stays a few chunks whatever the
input's size. pyarrow, pandas' I/O and the model's own predict release the GIL in their
heavy parts, so reading and writing run while a chunk is predicted.

Every output row carries the model name and version that scored it, the scoring time, its
position in the input (``input_row``) and the input's own columns that are not features (ids,
dates), so predictions join back to what they score. Outputs are written to a temporary
file beside the target and renamed at the end: a failed run leaves the previous file.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctcd.batch.model import ScoringModel
from ctcd.batch.rows import check_rows
from ctcd.data.csv_reader import BadLine, read_csv
from ctcd.data.spec import DatasetSpec
from ctcd.errors import InvalidParams
from ctcd.serving.errors import ModelRejectedInput
from ctcd.serving.schema import InputSchema, Table

DEFAULT_CHUNK_ROWS: Final = 100_000
PARQUET: Final = (".parquet", ".pq")
CSV: Final = (".csv", ".csv.gz")
PIPELINE_DEPTH: Final = 2  # chunks waiting between two steps
MAX_LINE_CHARS: Final = 10_000  # of an unparsable line kept in its reject

Progress = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")


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
    predicted = predict_chunk(model, frame, first_row=first_row, spec=spec, text=text)
    return assemble(model, predicted, scored_at or datetime.now(UTC), extra)


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
                ) -> Iterator[Chunk]:
    """Chunks of at most ``chunk_rows`` rows, read lazily. In a CSV file the signature's
    columns are read as text (numbers are parsed row by row when checked, so one bad value
    rejects its row), an empty field is null, and lines that do not parse come with the
    chunk read after them."""
    if file_kind(path) == "parquet":
        # pre_buffer (pyarrow's default) keeps every row group's read buffers until the
        # file is closed: memory grew with the file (+190 MB over 10 M rows); without it,
        # reading holds one row group.
        source = pq.ParquetFile(path, pre_buffer=False)
        for batch in source.iter_batches(batch_size=chunk_rows):
            yield Chunk(batch.to_pandas())
        return
    bad: list[BadLine] = []
    text = [c.name for c in (schema.columns if schema else ())]
    with pa.input_stream(str(path)) as stream:  # .gz is decompressed on the fly
        yield from chunks_of(read_csv(stream, str(path), text_columns=text,
                                      on_bad_line=bad.append, empty_text_is_null=True),
                             chunk_rows, bad)


def chunks_of(items: Iterable[tuple[str, pa.RecordBatch | pa.Schema]], chunk_rows: int,
              bad: list[BadLine]) -> Iterator[Chunk]:
    """Record batches (each file's schema first, as sources yield them) as chunks of at most
    ``chunk_rows`` rows; ``bad`` collects the lines a CSV reader could not parse, and they go
    with the next chunk (or one with no rows of its own)."""
    schema: pa.Schema | None = None
    text = False
    for origin, item in items:
        if isinstance(item, pa.Schema):
            schema, text = item, origin.lower().endswith(CSV)
            continue
        lines, bad[:] = tuple(bad), []
        if not item.num_rows:
            if lines:
                yield Chunk(item.to_pandas(), text, lines)
            continue
        for lo in range(0, item.num_rows, chunk_rows):
            yield Chunk(item.slice(lo, chunk_rows).to_pandas(), text, lines)
            lines = ()
    if bad and schema is not None:
        yield Chunk(schema.empty_table().to_pandas(), text, tuple(bad))
        bad.clear()


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


class Pipelined(Generic[T, R]):
    """``work(item)`` for each item, in order, as three overlapping steps: a reader thread
    pulls ``items``, a worker thread applies ``work``, and the caller iterates the results.
    At most ``depth`` items wait between two steps, so memory stays bounded.

    ``with Pipelined(items, work) as results: for r in results: ...``. An error in the
    reader or the worker is raised from the results iterator in the caller's thread (so a
    sink there rolls back); leaving the block early stops both threads. The caller's thread
    keeps what must stay in it: database connections, Airflow's task context.
    """

    def __init__(self, items: Iterable[T], work: Callable[[T], R], *,
                 depth: int = PIPELINE_DEPTH) -> None:
        self._items, self._work = items, work
        self._ahead: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._behind: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._read, name="ctcd-score-read", daemon=True),
                         threading.Thread(target=self._run, name="ctcd-score-work", daemon=True)]

    def __enter__(self) -> Iterator[R]:
        for thread in self._threads:
            thread.start()
        return self._results()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _results(self) -> Iterator[R]:
        while True:
            item = self._get(self._behind)
            if item is _END:
                return
            yield item

    def _get(self, source: queue.Queue[Any]) -> Any:
        """The next item; _END when stopped (the caller raises the first error)."""
        while True:
            if self._errors:
                raise self._errors[0]
            try:
                return source.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set() and not self._errors:
                    return _END

    def _put(self, target: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                target.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, error: BaseException) -> None:
        self._errors.append(error)
        self._stop.set()

    def _read(self) -> None:
        iterator = iter(self._items)
        try:
            for item in iterator:
                if not self._put(self._ahead, item):
                    return
            self._put(self._ahead, _END)
        except BaseException as err:
            self._fail(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _run(self) -> None:
        try:
            while True:
                item = self._get(self._ahead)
                if item is _END:
                    self._put(self._behind, _END)
                    return
                if self._stop.is_set():
                    return
                if not self._put(self._behind, self._work(item)):
                    return
        except BaseException as err:
            if not self._errors:  # the reader's error is already there
                self._fail(err)


_END: Final = object()
_POLL_S: Final = 0.05


@contextmanager
def score_chunks(model: ScoringModel, chunks: Iterable[Chunk], *,
                 spec: DatasetSpec | None = None, scored_at: datetime | None = None,
                 extra: Mapping[str, Any] | None = None,
                 depth: int = PIPELINE_DEPTH) -> Iterator[Iterator[ScoredChunk]]:
    """Scored chunks of ``chunks``, read ahead and predicted in threads (:class:`Pipelined`);
    the output frames are built in the caller's thread as it iterates."""
    when = scored_at or datetime.now(UTC)
    first = 0

    def predict(chunk: Chunk) -> Predicted:  # one worker thread: ``first`` needs no lock
        nonlocal first
        predicted = predict_chunk(model, chunk.frame, first_row=first, spec=spec,
                                  text=chunk.text, bad_lines=chunk.bad_lines)
        first += len(chunk.frame)
        return predicted

    with Pipelined(chunks, predict, depth=depth) as predicted:
        yield (assemble(model, p, when, extra) for p in predicted)


def reason_counts(rejects: pd.DataFrame) -> dict[str, int]:
    """Rejects per field (a reason's text before its first colon)."""
    if not len(rejects):
        return {}
    fields = rejects["reason"].astype(str).str.split(":", n=1).str[0]
    return {str(k): int(n) for k, n in fields.value_counts().items()}


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
    file_kind(source)
    file_kind(output)  # refuse unknown output types before any work
    file_kind(rejects)
    summary = Summary(model_name=model.name, model_version=model.version,
                      output=str(output), rejects=str(rejects))
    started, when = time.perf_counter(), datetime.now(UTC)
    out, bad = FrameWriter(output), FrameWriter(rejects)
    empty: pd.DataFrame | None = None  # the columns predictions have, for an all-rejected run
    try:
        with score_chunks(model, read_chunks(source, chunk_rows, model.schema), spec=spec,
                          scored_at=when) as chunks:
            for chunk in chunks:
                if len(chunk.predictions):
                    out.write(chunk.predictions)
                elif empty is None:
                    empty = chunk.predictions.iloc[:0]
                if len(chunk.rejects):
                    bad.write(chunk.rejects)
                    for key, count in reason_counts(chunk.rejects).items():
                        summary.reasons[key] = summary.reasons.get(key, 0) + count
                summary.rows += chunk.rows
                summary.scored += len(chunk.predictions)
                summary.rejected += len(chunk.rejects)
                summary.chunks += 1
                if progress is not None:
                    progress(chunk.rows)
        if not out.rows and empty is not None:
            out.write(empty)  # every row rejected: an empty file with the columns it has
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
