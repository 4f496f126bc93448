"""Where a data set's partitions come from, and how one is copied into a local snapshot.

Two sources, chosen by the run's Params:

- :class:`LandingSource`: dated partitions ``date=YYYY-MM-DD/*.parquet|*.csv`` under an
  Airflow ``ObjectStoragePath`` URI (``file://``, or ``s3://`` / ``gs://`` once the
  Amazon / Google provider is installed; ``landing_conn_id`` names the connection holding
  the credentials).
- :class:`SqlSource`: a SQL query run through an Airflow connection's ``common.sql`` hook
  (SQLite, PostgreSQL, ...); its rows carry the partition date in the spec's
  ``partition_column``.

Both copy a partition in bounded memory: record batches go one at a time into a local
Parquet file (:func:`ctcd.data.snapshots.atomic_path`), never a whole frame. A file that
cannot be read (truncated Parquet, a CSV in another encoding) stops the run with a
:class:`DataValidationError` naming the file and what to do.

A CSV line the parser cannot split into the header's fields (too many or too few, or an
unterminated quote) stops a training run too, naming the line. A scoring job passes
``on_bad_line`` instead: the line is handed to it (:class:`BadLine`, with its line number)
and the rest of the file is read.
"""

from __future__ import annotations

import csv as _csv
import itertools
import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ctcd.data.snapshots import atomic_path
from ctcd.data.spec import DatasetSpec
from ctcd.errors import DataValidationError, InvalidParams

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

BATCH_ROWS = 64_000
PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class BadLine:
    """A CSV line that does not split into the header's fields."""

    origin: str
    line: int | None  # physical line number, 1-based (the header is line 1)
    text: str
    expected: int
    found: int

    @property
    def reason(self) -> str:
        where = f"line {self.line}" if self.line else "a line"
        quote = " (an unterminated quote)" if self.text.count('"') % 2 else ""
        fields = f"{self.found} field" + ("" if self.found == 1 else "s")
        return (f"unparsable: {where} of {Path(self.origin).name}: {fields} where the header "
                f"has {self.expected}{quote}")


OnBadLine = Callable[[BadLine], None]


class Source(Protocol):
    """A place partitions of one data set arrive in."""

    @property
    def id(self) -> str:
        """Stable identity of the source (part of the watermark's key)."""

    def partitions(self) -> list[date]:
        """The partition dates present, oldest first."""

    def batches(self, day: date) -> Iterator[tuple[str, pa.RecordBatch | pa.Schema]]:
        """(origin, item) pairs: each file's schema first, then its record batches."""


@dataclass(frozen=True)
class Copied:
    path: Path
    rows: int
    files: tuple[str, ...]


def copy_partition(source: Source, day: date, spec: DatasetSpec, dest: Path) -> Copied:
    """Write partition ``day`` of ``source`` to ``dest`` (Parquet), batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    first = ""
    files: list[str] = []
    rows = 0
    with atomic_path(dest) as tmp:
        try:
            for origin, item in source.batches(day):
                if isinstance(item, pa.Schema):
                    files.append(origin)
                    if schema is None:
                        schema, first = _with_partition(item, spec), origin
                        writer = pq.ParquetWriter(tmp, schema)
                    elif set(_with_partition(item, spec).names) != set(schema.names):
                        raise DataValidationError(
                            f"{origin} has columns {sorted(item.names)} but {first} has "
                            f"{sorted(schema.names)}: every file of partition {day} needs the "
                            "same columns. Fix or remove the odd file and re-run."
                        )
                    continue
                table = _fill_partition(pa.Table.from_batches([item]), spec, day)
                assert writer is not None and schema is not None
                try:
                    table = table.select(schema.names).cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise DataValidationError(
                        f"{origin}: its column types differ from {first}'s ({err}); every file "
                        f"of partition {day} needs the same types."
                    ) from err
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    if not files:
        raise DataValidationError(
            f"Partition {day} of {source.id} holds no data files (*.parquet or *.csv): it is "
            "empty. Land the partition's files, or remove the empty partition."
        )
    return Copied(path=dest, rows=rows, files=tuple(files))


def _with_partition(schema: pa.Schema, spec: DatasetSpec) -> pa.Schema:
    import pyarrow as pa

    column = spec.partition_column
    if column and column not in schema.names:
        return schema.append(pa.field(column, pa.string()))
    return schema


def _fill_partition(table: pa.Table, spec: DatasetSpec, day: date) -> pa.Table:
    """Hive-style partitions: rows without the partition column get it from the path."""
    import pyarrow as pa

    column = spec.partition_column
    if column and column not in table.column_names:
        values = pa.array([day.isoformat()] * table.num_rows, pa.string())
        return table.append_column(column, values)
    return table


# --- a landing location ------------------------------------------------------------------


def default_landing_uri(dataset: str) -> str:
    """Where labelled partitions to train on land by default."""
    from ctcd.settings import get_settings

    return f"file://{get_settings().home / 'landing' / dataset}/"


def default_scoring_uri(dataset: str) -> str:
    """Where unlabelled partitions to score land by default (``batch_inference``)."""
    from ctcd.settings import get_settings

    return f"file://{get_settings().home / 'scoring' / dataset}/"


class LandingSource:
    """Dated partitions under an ``ObjectStoragePath``: ``<uri>/date=YYYY-MM-DD/<files>``."""

    def __init__(self, uri: str, spec: DatasetSpec, *, conn_id: str | None = None) -> None:
        from airflow.sdk import ObjectStoragePath

        self.uri = uri
        self.spec = spec
        try:
            self.root = ObjectStoragePath(uri, conn_id=conn_id or None)
        except (ValueError, ImportError) as err:
            raise InvalidParams(
                f"landing_uri {uri!r} cannot be opened ({err}). Use file://, or install the "
                "provider for the scheme (s3:// needs apache-airflow-providers-amazon, gs:// "
                "apache-airflow-providers-google)."
            ) from err

    @property
    def id(self) -> str:
        return self.uri.rstrip("/")

    def partitions(self) -> list[date]:
        if not self.root.exists():
            return []
        days = []
        for child in self.root.iterdir():
            match = PARTITION.match(child.name)
            if match and child.is_dir():
                try:
                    days.append(date.fromisoformat(match.group(1)))
                except ValueError:
                    continue
        return sorted(days)

    def files(self, day: date) -> list[Any]:
        folder = self.root / f"date={day.isoformat()}"
        return sorted(
            (
                f
                for f in folder.iterdir()
                if f.name.endswith(SUFFIXES) and not f.name.startswith((".", "_"))
            ),
            key=lambda f: f.name,
        )

    def batches(self, day: date, *, on_bad_line: OnBadLine | None = None,
                text_columns: Collection[str] = ()
                ) -> Iterator[tuple[str, pa.RecordBatch | pa.Schema]]:
        """Also, for CSV files: ``on_bad_line`` takes lines that do not parse (default: they
        stop the read); ``text_columns`` are read as text besides the spec's ids, dates and
        categories (a scoring job reads numeric features as text and parses them row by row,
        so one bad value rejects its row, not the file)."""
        for path in self.files(day):
            origin = str(path)
            with path.open("rb") as handle:
                if path.name.endswith(".parquet"):
                    yield from _parquet_batches(handle, origin)
                else:
                    text = [self.spec.id_column, *self.spec.categorical_features, *text_columns]
                    if self.spec.partition_column:
                        text.append(self.spec.partition_column)
                    yield from read_csv(handle, origin, text_columns=text,
                                        on_bad_line=on_bad_line)


def _parquet_batches(handle: Any, origin: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Without pre_buffer: with it, pyarrow keeps each row group's buffers until the file
        # is closed, so memory would grow with the file.
        parquet = pq.ParquetFile(handle, pre_buffer=False)
        yield origin, parquet.schema_arrow
        yield from ((origin, b) for b in parquet.iter_batches(batch_size=BATCH_ROWS))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(
            f"{origin} is not a readable Parquet file ({err}): it is truncated or corrupt. "
            "Re-export it from the source system and land it again."
        ) from err


def read_csv(handle: Any, origin: str, *, text_columns: Collection[str] = (),
             on_bad_line: OnBadLine | None = None, empty_text_is_null: bool = False,
             block_size: int = 8 << 20) -> Iterator[tuple[str, Any]]:
    """(origin, schema) then (origin, record batch) pairs of a CSV file, read block by block.

    ``text_columns`` are read as text whatever they look like (ids, dates, categories); the
    others are inferred from the first block, so a column of the wrong type reaches
    validation and is named there. A line with the wrong number of fields goes to
    ``on_bad_line`` when given; otherwise it stops the read with a DataValidationError naming
    the line. ``empty_text_is_null``: an empty field of a text column is null, not ``""``.

    An unterminated quote makes the parser run its field on over the lines after it, to the
    end of the block; with ``on_bad_line``, only the line with the quote is bad, and the
    lines it swallowed are parsed again (after the batch they were cut from) and read like
    the others.
    """
    return _read_csv(handle, origin, text_columns=text_columns, on_bad_line=on_bad_line,
                     empty_text_is_null=empty_text_is_null, block_size=block_size)


def _read_csv(handle: Any, origin: str, *, text_columns: Collection[str],
              on_bad_line: OnBadLine | None, empty_text_is_null: bool, block_size: int,
              schema: pa.Schema | None = None, first_line: int = 0
              ) -> Iterator[tuple[str, Any]]:
    """``read_csv``; with ``schema``, ``handle`` is lines without a header, read as that
    schema, whose first line is line ``first_line + 1`` of the file."""
    import pyarrow as pa
    from pyarrow import csv

    seen: list[BadLine] = []
    swallowed: list[tuple[int, str]] = []  # (line before them, text) to parse again
    lines = _EmptyLines(handle, header=schema is None)
    joined = 0  # line ends inside the bad rows so far: the parser counts rows, not lines

    def bad_row(row: Any) -> str:
        nonlocal joined
        number = first_line + lines.physical(row.number + joined) if row.number else None
        text, found = row.text, row.actual_columns
        # (the empty lines among them are counted as empty lines already)
        joined += text.count("\n") - len(_EMPTY_LINE.findall(text.encode()))
        if on_bad_line is not None and number is not None and "\n" in text:
            text, rest = text.split("\n", 1)
            text = text.removesuffix("\r")
            found = len(next(_csv.reader([text])))
            if rest.strip():
                swallowed.append((number, rest))
        line = BadLine(origin, number, text, row.expected_columns, found)
        if on_bad_line is None:
            seen.append(line)
            return "error"
        on_bad_line(line)
        return "skip"

    if schema is None:
        types = {name: pa.string() for name in text_columns}
        read = csv.ReadOptions(block_size=block_size, use_threads=False)
    else:
        types = dict(zip(schema.names, schema.types, strict=True))
        read = csv.ReadOptions(block_size=block_size, use_threads=False,
                               column_names=schema.names)
    options = csv.ConvertOptions(column_types=types, strings_can_be_null=empty_text_is_null,
                                 **({"null_values": [""]} if empty_text_is_null else {}))
    try:
        # One thread: the parser then knows each line's number (the caller overlaps reading
        # with its own work in a thread of its own).
        reader = csv.open_csv(lines, read_options=read, convert_options=options,
                              parse_options=csv.ParseOptions(invalid_row_handler=bad_row))
        yield origin, reader.schema
        # the lines a bad row swallowed, after the batch it was cut from (and after the last
        # block, whose rows may all have been bad)
        for batch in itertools.chain(reader, [None]):  # lazily: bounded memory
            if batch is not None:
                yield origin, batch
            while swallowed:
                yield from _again(swallowed.pop(0), origin, reader.schema, on_bad_line,
                                  empty_text_is_null, block_size)
    except pa.ArrowInvalid as err:
        if seen:
            raise DataValidationError(
                f"{origin}: {seen[0].reason.removeprefix('unparsable: ')}: "
                f"{seen[0].text[:200]!r}. Fix the line (its quoting, or a comma inside an "
                "unquoted value) and re-run."
            ) from err
        hint = (
            " Save the file as UTF-8."
            if "utf8" in str(err).lower() or "utf-8" in str(err).lower()
            else " Check the file's delimiter (a comma), quoting and encoding (UTF-8)."
        )
        raise DataValidationError(f"{origin} is not a readable CSV file ({err}).{hint}") from err


def _again(swallowed: tuple[int, str], origin: str, schema: pa.Schema,
           on_bad_line: OnBadLine | None, empty_text_is_null: bool, block_size: int
           ) -> Iterator[tuple[str, Any]]:
    """The record batches of lines an unterminated quote swallowed, read as ``schema``."""
    import io

    before, text = swallowed
    parsed = _read_csv(io.BytesIO(text.encode()), origin, text_columns=(),
                       on_bad_line=on_bad_line, empty_text_is_null=empty_text_is_null,
                       block_size=block_size, schema=schema, first_line=before)
    next(parsed)  # the schema: the caller's
    yield from parsed


_EMPTY_LINE = re.compile(rb"(?<=\n)\r?\n")  # a line end right at a line start
_LINE_SO_FAR = {b"": b"\n", b"\r": b"\n\r"}  # the current line's start, as text before data


class _EmptyLines:
    """Reads a CSV file for the parser and notes its empty lines: the parser skips them
    without counting them, so its line numbers are mapped back to the file's own."""

    def __init__(self, raw: Any, header: bool = True) -> None:
        self.raw = raw
        self.empty: deque[int] = deque()  # line numbers (1-based) of empty lines, ascending
        self._skipped = 0  # empty lines before the last line asked about
        self._lines = 1  # the line the next byte is on
        # the current line so far, cut to 2 bytes (a header is not empty; lines without one
        # start at a line start)
        self._partial = b"x" if header else b""

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        prefix = _LINE_SO_FAR.get(self._partial, b"x")
        text = prefix + data
        line, last = self._lines - prefix.count(b"\n"), 0
        for match in _EMPTY_LINE.finditer(text):
            line += text.count(b"\n", last, match.start())
            last = match.start()
            self.empty.append(line)
        self._lines += data.count(b"\n")
        end = data.rfind(b"\n")
        self._partial = data[end + 1:end + 3] if end >= 0 else (self._partial + data)[:2]
        return data

    def physical(self, number: int) -> int:
        """The file's line number of the parser's line ``number`` (asked in ascending order,
        as the parser reports lines: empty lines before it are counted and let go)."""
        line = number + self._skipped
        while self.empty and self.empty[0] <= line:
            self.empty.popleft()
            self._skipped += 1
            line += 1
        return line

    @property
    def closed(self) -> bool:
        return bool(getattr(self.raw, "closed", False))


# --- a SQL query through an Airflow connection -------------------------------------------


class SqlSource:
    """Rows of ``query`` through the ``common.sql`` hook of Airflow connection ``conn_id``.

    The query's rows carry their partition date in ``spec.partition_column``; partition
    ``day`` is the query's rows with that column equal to ``day``.
    """

    def __init__(self, conn_id: str, query: str, spec: DatasetSpec) -> None:
        if not spec.partition_column:
            raise InvalidParams(
                f"Data set {spec.name!r} has no partition_column in its spec, so a SQL source "
                "cannot tell its partitions apart. Add partition_column to the spec."
            )
        self.conn_id = conn_id
        self.query = query.strip().rstrip(";")
        self.spec = spec
        self.column = spec.partition_column

    @property
    def id(self) -> str:
        return f"sql://{self.conn_id}"

    def _hook(self) -> Any:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return BaseHook.get_connection(self.conn_id).get_hook()
        except AirflowNotFoundException as err:
            raise InvalidParams(
                f"No Airflow connection {self.conn_id!r} for the SQL source: add it (Admin -> "
                "Connections, or AIRFLOW_CONN_" + self.conn_id.upper() + ") or set sql_conn_id."
            ) from err

    def partitions(self) -> list[date]:
        sql = f"SELECT DISTINCT {self.column} FROM ({self.query}) AS src"
        days = set()
        for (value,) in self._hook().get_records(sql):
            if value is not None:
                days.add(date.fromisoformat(str(value)[:10]))
        return sorted(days)

    def batches(self, day: date) -> Iterator[tuple[str, pa.RecordBatch | pa.Schema]]:
        import pyarrow as pa

        # ``day`` is a parsed date, so its ISO form is safe to inline in the statement.
        sql = (
            f"SELECT * FROM ({self.query}) AS src "
            f"WHERE {self.column} = '{day.isoformat()}'"
        )
        origin = f"{self.id} ({sql})"
        conn = self._hook().get_conn()
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            names = [d[0] for d in cursor.description]
            schema: pa.Schema | None = None
            while rows := cursor.fetchmany(BATCH_ROWS):
                table = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in rows])
                if schema is None:
                    schema = table.schema
                    yield origin, schema
                yield origin, table.cast(schema).to_batches()[0]
            if schema is None:
                raise DataValidationError(
                    f"Partition {day} of {self.id} is empty: the query returned no rows."
                )
        finally:
            conn.close()
