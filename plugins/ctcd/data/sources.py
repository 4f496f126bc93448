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

CSV files are read by :mod:`ctcd.data.csv_reader`: a line that does not parse stops a
training run, naming the line; a scoring job passes ``on_bad_line`` to keep reading.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ctcd.data.csv_checks import wrong_delimiter
from ctcd.data.csv_reader import OnBadLine, read_csv
from ctcd.data.snapshots import NOTES, atomic_path
from ctcd.data.spec import DatasetSpec
from ctcd.errors import DataValidationError, InvalidParams

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

BATCH_ROWS = 64_000
PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
SUFFIXES = (".parquet", ".csv")


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
    notes: list[str] = []
    rows = 0
    with atomic_path(dest) as tmp:
        try:
            for origin, item in source.batches(day):
                if isinstance(item, pa.Schema):
                    files.append(origin)
                    item = _spec_columns(item, spec, origin, notes)
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
                if writer is None or schema is None:  # set with the first file above
                    raise RuntimeError(f"{origin}: no schema from the partition's first file")
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
                if notes:
                    writer.add_key_value_metadata({NOTES: json.dumps(notes)})
                writer.close()
    if not files:
        raise DataValidationError(
            f"Partition {day} of {source.id} holds no data files (*.parquet or *.csv): it is "
            "empty. Land the partition's files, or remove the empty partition."
        )
    return Copied(path=dest, rows=rows, files=tuple(files))


def _spec_columns(schema: pa.Schema, spec: DatasetSpec, origin: str,
                  notes: list[str]) -> pa.Schema:
    """The columns of ``schema`` the spec knows, in the file's order; the others are left
    out of the snapshot, with a warning in the task log. A file with none of them is kept
    as it is, for validation to fail on, and what seems wrong with it goes to ``notes``."""
    import pyarrow as pa

    known = [f for f in schema if f.name in spec.columns]
    other = [n for n in schema.names if n not in spec.columns]
    if not other:
        return schema
    if not known:
        wrong = wrong_delimiter(other[0]) if len(other) == 1 else None
        notes.append(f"{origin}: {wrong}" if wrong else (
            f"{origin} has none of the columns of data set {spec.name!r} (it has "
            f"{_listed(other)}): is it a file of another data set? Move it out of the "
            "partition, or land the data set's own file."))
        log.warning("%s", notes[-1])
        return schema
    log.warning(
        "%s: %d column(s) not in the spec of data set %r are left out of the snapshot: "
        "%s. To train on them, add them to the spec's features and regenerate its suite "
        "(ctcd data suite %s).", origin, len(other), spec.name, _listed(other), spec.name)
    return pa.schema(known)  # (without the file's pandas metadata, which lists them all)


def _listed(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


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
                                        numeric_columns=self.spec.numeric_features,
                                        columns=self.spec.columns, on_bad_line=on_bad_line)


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
