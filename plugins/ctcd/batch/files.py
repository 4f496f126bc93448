"""Scoring input and output files: their kinds and default names, reading a Parquet or CSV
file as chunks of bounded size, and writing frames through a temporary file beside the target
that is renamed at the end (a failed run leaves the previous file)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctcd.batch.chunk import Chunk
from ctcd.data.csv_reader import BadLine, read_csv
from ctcd.errors import InvalidParams
from ctcd.serving.schema import InputSchema

PARQUET: Final = (".parquet", ".pq")
CSV: Final = (".csv", ".csv.gz")


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
        strings = text_features(schema)
        for batch in source.iter_batches(batch_size=chunk_rows):
            yield Chunk(to_frame(batch, strings))
        return
    bad: list[BadLine] = []
    text = [c.name for c in (schema.columns if schema else ())]
    with pa.input_stream(str(path)) as stream:  # .gz is decompressed on the fly
        yield from chunks_of(read_csv(stream, str(path), text_columns=text,
                                      on_bad_line=bad.append, empty_text_is_null=True),
                             chunk_rows, bad, strings=text_features(schema))


def chunks_of(items: Iterable[tuple[str, pa.RecordBatch | pa.Schema]], chunk_rows: int,
              bad: list[BadLine], *, strings: Collection[str] = ()) -> Iterator[Chunk]:
    """Record batches (each file's schema first, as sources yield them) as chunks of at most
    ``chunk_rows`` rows; ``bad`` collects the lines a CSV reader could not parse, and they go
    with the next chunk (or one with no rows of its own). ``strings``: see
    :func:`to_frame`."""
    schema: pa.Schema | None = None
    text = False
    for origin, item in items:
        if isinstance(item, pa.Schema):
            schema, text = item, origin.lower().endswith(CSV)
            continue
        lines, bad[:] = tuple(bad), []
        if not item.num_rows:
            if lines:
                yield Chunk(to_frame(item, strings), text, lines)
            continue
        for lo in range(0, item.num_rows, chunk_rows):
            yield Chunk(to_frame(item.slice(lo, chunk_rows), strings), text, lines)
            lines = ()
    if bad and schema is not None:
        yield Chunk(schema.empty_table().to_pandas(), text, tuple(bad))
        bad.clear()


def text_features(schema: InputSchema | None) -> tuple[str, ...]:
    """The signature's text columns (the model takes them as Python strings); none without
    a signature."""
    return schema.text_columns if schema else ()


def to_frame(batch: pa.RecordBatch, strings: Collection[str] = ()) -> pd.DataFrame:
    """``batch`` as a DataFrame; its text columns named in ``strings`` as object arrays
    holding one Python string per distinct value. The model's input takes Python strings,
    and pandas' Arrow-backed text makes one per row at each ``to_numpy()``: for a
    100,000-row chunk's four text features, 30 ms in the scoring thread, against 12 ms
    here, in the reader thread. A null stays NaN, as ``to_numpy()`` gives it."""
    frame = batch.to_pandas()
    for name in strings:
        index = batch.schema.get_field_index(name)
        if index < 0:
            continue
        column = batch.column(index)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        encoded = pc.dictionary_encode(column, null_encoding="encode")
        distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
        distinct[pd.isna(distinct)] = np.nan
        frame[name] = pd.Series(distinct[encoded.indices.to_numpy()], index=frame.index,
                                dtype=object)
    return frame


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
