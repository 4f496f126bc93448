"""A CSV file read with pyarrow in bounded memory, its damaged lines named by line number.

:func:`read_csv` yields the file's schema, then its record batches, block by block. A line
the parser cannot split into the header's fields (too many or too few, or an unterminated
quote) stops a training read, naming the line. A scoring read passes ``on_bad_line``
instead: the line is handed to it (:class:`BadLine`, with its line number) and the rest of
the file is read.

The parser counts rows, skips empty lines without counting them, and runs an unterminated
quote on to the end of its block; this module maps its numbers back to the file's own
lines and parses the lines such a quote swallowed again.
"""

from __future__ import annotations

import csv as _csv
import itertools
import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctcd.data.csv_checks import (
    column_names,
    header_of,
    opened,
    why_not_numbers,
    wrong_delimiter,
)
from ctcd.errors import DataValidationError

if TYPE_CHECKING:
    import pyarrow as pa


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


def read_csv(handle: Any, origin: str, *, text_columns: Collection[str] = (),
             numeric_columns: Collection[str] = (), columns: Collection[str] | None = None,
             on_bad_line: OnBadLine | None = None, empty_text_is_null: bool = False,
             block_size: int = 8 << 20) -> Iterator[tuple[str, Any]]:
    """(origin, schema) then (origin, record batch) pairs of a CSV file, read block by block.

    A gzip, bzip2 or zstd file is read decompressed whatever its name; an archive or a
    Parquet file stops the read, saying so (:mod:`ctcd.data.csv_checks`), as does a line
    that does not parse under a header that seems to use another delimiter than a comma.
    (A file whose every line is one field under such a header reads as one column; the
    caller says what it thinks of that: :func:`ctcd.data.sources.copy_partition`.)

    ``text_columns`` are read as text whatever they look like (ids, dates, categories); the
    others are inferred from the first block, so a column of the wrong type reaches
    validation and is named there. ``numeric_columns`` are to hold numbers: when one comes
    out as text, the read stops with the values that made it text and their line numbers
    (or the header line repeated mid-file). ``columns``: the columns the caller uses; any
    other column is read as text, so it never stops the read (the caller leaves it out).

    A line with the wrong number of fields goes to ``on_bad_line`` when given; otherwise it
    stops the read with a DataValidationError naming the line. ``empty_text_is_null``: an
    empty field of a text column is null, not ``""``.

    An unterminated quote makes the parser run its field on over the lines after it, to the
    end of the block; with ``on_bad_line``, only the line with the quote is bad, and the
    lines it swallowed are parsed again (after the batch they were cut from) and read like
    the others.
    """
    stream, codec = opened(handle, origin)
    try:
        stream, header = header_of(stream)
        names = column_names(header)
        text = {*text_columns, *(n for n in names if columns is not None and n not in columns)}
        yield from _read_csv(stream, origin, text_columns=text,
                             numeric_columns=[c for c in numeric_columns if c not in text],
                             on_bad_line=on_bad_line, empty_text_is_null=empty_text_is_null,
                             block_size=block_size)
    except _BadLines as err:
        wrong = wrong_delimiter(header)  # e.g. ';' with decimal commas: 1 field, then 3
        raise DataValidationError(f"{origin}: {wrong}" if wrong else str(err)) from err
    except _NotNumbers as err:
        raise _why_not_numbers(handle, origin, err) from None
    except OSError as err:
        if codec is None:
            raise
        raise DataValidationError(
            f"{origin} is {codec}-compressed, but it does not decompress ({err}): it is "
            "truncated or corrupt. Compress it again (or land it uncompressed) and re-run."
        ) from err


_NUMBER_EXPECTED = re.compile(r"conversion error to (u?int|float|halffloat|double|decimal)")


class _BadLines(Exception):
    """A training read met a line that does not parse (the message names it)."""


class _NotNumbers(Exception):
    """Columns to hold numbers came out as text (``columns``; pyarrow's own words)."""

    def __init__(self, columns: list[str], detail: str) -> None:
        super().__init__(detail)
        self.columns, self.detail = columns, detail


def _why_not_numbers(handle: Any, origin: str, err: _NotNumbers) -> DataValidationError:
    """The file read again from its start, for the values that are not numbers."""
    message = None
    try:
        handle.seek(0)
    except (AttributeError, OSError, ValueError):
        pass  # not seekable: say what pyarrow said
    else:
        message = why_not_numbers(opened(handle, origin)[0], origin, err.columns)
    return DataValidationError(message or (
        f"{origin}: columns {err.columns} are to hold numbers but do not ({err.detail}). "
        "Correct the file at its source and land it again."))


def _read_csv(handle: Any, origin: str, *, text_columns: Collection[str],
              on_bad_line: OnBadLine | None, empty_text_is_null: bool, block_size: int,
              numeric_columns: Collection[str] = (), schema: pa.Schema | None = None,
              first_line: int = 0) -> Iterator[tuple[str, Any]]:
    """``read_csv`` of a text stream; raises :class:`_NotNumbers` when a
    ``numeric_columns`` comes out as text. With ``schema``, ``handle`` is lines without a
    header, read as that schema, whose first line is line ``first_line + 1`` of the file."""
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
        text = [n for n in numeric_columns if n in reader.schema.names
                and reader.schema.field(n).type in (pa.string(), pa.large_string())]
        if text:
            raise _NotNumbers(text, f"{text} read as text")
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
            raise _BadLines(
                f"{origin}: {seen[0].reason.removeprefix('unparsable: ')}: "
                f"{seen[0].text[:200]!r}. Fix the line (its quoting, or a comma inside an "
                "unquoted value) and re-run."
            ) from err
        if numeric_columns and _NUMBER_EXPECTED.search(str(err)):
            raise _NotNumbers(list(numeric_columns), str(err)) from err
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


