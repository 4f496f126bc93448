"""What a CSV file is before pyarrow parses it, and what went wrong when it parses badly.

Every CSV file gets two cheap looks, at its first bytes and at its header line:

- :func:`opened`: a gzip, bzip2 or zstd file (whatever its name) is read through pyarrow's
  streaming decompressor, in bounded memory; a zip or xz archive, or a Parquet file named
  ``.csv``, stops the read with a message saying what the file is.
- :func:`header_of` and :func:`wrong_delimiter`: a header that is one column at commas but
  several at ``;``, a tab or ``|`` is said to have the wrong delimiter, naming the one the
  file seems to use.

When a column the caller reads as numbers comes out as text, :func:`why_not_numbers` reads
the file again with Python's ``csv`` module, which knows the line each record starts on,
and says what made it text: header lines repeated further down (files joined with their
headers), and values that are not numbers, counted over the whole file, with examples and
their line numbers. It runs only on a file that stops the run anyway.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from ctcd.errors import DataValidationError

log = logging.getLogger(__name__)

BOM: Final = b"\xef\xbb\xbf"
# (first bytes, pyarrow codec): read through pyarrow's decompressor
COMPRESSED: Final = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))
# (first bytes, what the file is, what to do)
NOT_CSV: Final = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook is one too)",
     "extract the CSV file and land it, or land it gzip-compressed (read as it is)"),
    (b"\xfd7zXZ\x00", "xz-compressed",
     "land it uncompressed, or compressed with gzip, bzip2 or zstd (read as they are)"),
    (b"PAR1", "a Parquet file", "give it the .parquet suffix"),
)
DELIMITERS: Final = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}
HEADER_LIMIT: Final = 1 << 20  # bytes looked at for the end of the header line
EXAMPLES: Final = 5
# What pyarrow reads as a number (ints, decimals, exponents, inf); its nulls are its own.
NUMBER: Final = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(inf|infinity)\s*",
                           re.IGNORECASE)


class Replay:
    """A binary stream whose first bytes were read already, to look at them: they are read
    again first."""

    def __init__(self, head: bytes, raw: Any) -> None:
        self.head, self.raw = head, raw

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            data: bytes = self.raw.read(size)
            return data
        if size < 0:
            data, self.head = self.head + self.raw.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data + (self.raw.read(size - len(data)) if len(data) < size else b"")

    @property
    def closed(self) -> bool:
        return bool(getattr(self.raw, "closed", False))

    def close(self) -> None:
        """The caller closes the file it opened."""


def opened(handle: Any, origin: str) -> tuple[Any, str | None]:
    """``handle``'s bytes as text to parse, and the codec it was compressed with (or None)."""
    import pyarrow as pa

    head = _read(handle, 6)
    for magic, codec in COMPRESSED:
        if head.startswith(magic):
            log.info("%s is %s-compressed: reading it decompressed", origin, codec)
            return pa.CompressedInputStream(Replay(head, handle), codec), codec
    for magic, what, todo in NOT_CSV:
        if head.startswith(magic):
            raise DataValidationError(f"{origin} is {what}, not a CSV file: {todo}.")
    return Replay(head, handle), None


def header_of(stream: Any) -> tuple[Replay, str]:
    """The stream from its first byte again, and its header line as text."""
    head = b""
    while b"\n" not in head and len(head) < HEADER_LIMIT and (more := stream.read(1 << 16)):
        head += more
    line = head.split(b"\n", 1)[0].removeprefix(BOM).decode("utf-8", "replace").rstrip("\r")
    return Replay(head, stream), line


def column_names(header: str) -> list[str]:
    return next(csv.reader([header]), [])


def wrong_delimiter(header: str) -> str | None:
    """What to say of a header line that is one column at commas but several at a
    semicolon, a tab or a pipe; None for any other."""
    if len(column_names(header)) != 1:
        return None
    split = {d: len(next(csv.reader([header], delimiter=d))) for d in DELIMITERS}
    delimiter = max(split, key=lambda d: split[d])
    if split[delimiter] < 2:
        return None
    name = DELIMITERS[delimiter]
    return (
        f"the delimiter looks wrong: its header line is one column when split at commas but "
        f"{split[delimiter]} columns at each {name} ({_cut(header)!r}), so the file seems to be "
        f"{name.split()[0]}-separated; CSV files are read comma-separated. Save it with commas "
        "as its delimiter (pandas: to_csv(sep=','); Excel: \"CSV UTF-8 (Comma delimited)\") "
        "and land it again."
    )


@dataclass
class _Column:
    name: str
    rows: int = 0
    text: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)


def why_not_numbers(stream: Any, origin: str, columns: Collection[str]) -> str | None:
    """Why ``columns`` of the CSV file ``stream`` (read from its first byte) are not numbers:
    repeated header lines and text values, with line numbers, as a message; None if neither
    is found."""
    from pyarrow.csv import ConvertOptions

    nulls = frozenset(ConvertOptions().null_values)
    records = csv.reader(_lines(stream))
    header = next(records, [])
    checked = [_Column(name) for name in header if name in columns]
    where = [header.index(c.name) for c in checked]
    repeated: list[int] = []
    line = records.line_num
    for record in records:
        start, line = line + 1, records.line_num
        if record == header:
            repeated.append(start)
            continue
        for column, index in zip(checked, where, strict=True):
            if index >= len(record):
                continue
            column.rows += 1
            value = record[index]
            if value not in nulls and not NUMBER.fullmatch(value):
                column.text += 1
                if len(column.examples) < EXAMPLES:
                    column.examples.append((start, value))
    found = []
    if repeated:
        said = f"({_cut(','.join(header))!r}), as files joined with their headers do"
        if len(repeated) == 1:
            found.append(f"line {repeated[0]} repeats the header line {said}: remove it")
        else:
            lines = ", ".join(map(str, repeated[:EXAMPLES]))
            more = " ..." if len(repeated) > EXAMPLES else ""
            found.append(f"{len(repeated):,} lines ({lines}{more}) repeat the header line "
                         f"{said}: remove them")
    for column in checked:
        if column.text:
            examples = ", ".join(f"line {n}: {v!r}" for n, v in column.examples)
            found.append(
                f"column {column.name!r} holds text in {column.text:,} of its {column.rows:,} "
                f"rows where numbers are expected, e.g. {examples}"
            )
    if not found:
        return None
    empty = " (an empty field is a missing value)" if any(c.text for c in checked) else ""
    return (f"{origin}: " + "; ".join(found) + f". Correct the file at its source{empty} and "
            "land it again.")


def _lines(stream: Any) -> Iterator[str]:
    """The stream's lines as text, line ends kept (as the csv module wants them)."""
    rest, first = b"", True
    while chunk := stream.read(1 << 20):
        if first:
            chunk, first = chunk.removeprefix(BOM), False
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line.decode("utf-8", "replace") + "\n" for line in lines)
    if rest:
        yield rest.decode("utf-8", "replace")


def _read(handle: Any, size: int) -> bytes:
    data = b""
    while len(data) < size and (more := handle.read(size - len(data))):
        data += more
    return data


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
