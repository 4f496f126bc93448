"""What a CSV file is before it is parsed, and why its numbers are not numbers: on real
bytes, through the reader that uses these checks."""

from __future__ import annotations

import bz2
import gzip
import io
import zipfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctcd.data.csv_checks import header_of, opened, why_not_numbers, wrong_delimiter
from ctcd.data.csv_reader import BadLine, read_csv
from ctcd.errors import DataValidationError

PLAIN = b"id,x,t\n" + b"".join(b"%d,%d.5,a%d\n" % (i, i, i) for i in range(1, 2001))


def _rows(data: bytes, **kwargs: Any) -> pa.Table:
    batches = [b for _, b in read_csv(io.BytesIO(data), "x.csv", **kwargs)
               if not isinstance(b, pa.Schema)]
    return pa.Table.from_batches(batches)


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return bytes(sink.getvalue())


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, _zstd],
                         ids=["gzip", "bz2", "zstd"])
def test_a_compressed_file_is_read_decompressed_whatever_its_name(compress: Any) -> None:
    plain = _rows(PLAIN, block_size=1 << 12)
    assert _rows(compress(PLAIN), block_size=1 << 12).equals(plain)
    assert plain.num_rows == 2_000


def test_line_numbers_of_a_compressed_file_are_its_own() -> None:
    data = b"h,v\n1,2\n\n3,4,5\n6,7\n"
    bad: list[BadLine] = []
    assert _rows(gzip.compress(data), on_bad_line=bad.append).num_rows == 2
    assert [(b.line, b.text) for b in bad] == [(4, "3,4,5")]


def test_a_truncated_gzip_file_says_it_does_not_decompress() -> None:
    data = gzip.compress(PLAIN)
    with pytest.raises(DataValidationError, match=r"^x\.csv is gzip-compressed, but it does "
                       r"not decompress \(.*\): it is truncated or corrupt"):
        _rows(data[: len(data) // 2])


def test_an_archive_or_a_parquet_file_named_csv_says_what_it_is() -> None:
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("x.csv", PLAIN)
    with pytest.raises(DataValidationError, match=r"^x\.csv is a zip archive .*extract the "
                       "CSV file"):
        opened(io.BytesIO(packed.getvalue()), "x.csv")
    parquet = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), parquet)
    with pytest.raises(DataValidationError, match=r"^x\.csv is a Parquet file, not a CSV file: "
                       "give it the .parquet suffix"):
        opened(io.BytesIO(parquet.getvalue()), "x.csv")


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"),
                                                 ("|", "pipe")])
def test_a_header_split_by_another_delimiter_names_it(delimiter: str, name: str) -> None:
    data = PLAIN.replace(b",", delimiter.encode())
    stream, header = header_of(io.BytesIO(data))
    assert stream.read() == data and header == f"id{delimiter}x{delimiter}t"
    said = wrong_delimiter(header)
    assert said is not None and said.startswith(
        f"the delimiter looks wrong: its header line is one column when split at commas but 3 "
        f"columns at each {name}")
    assert f"the file seems to be {name}-separated" in said


def test_lines_that_do_not_parse_under_such_a_header_stop_the_read_naming_it() -> None:
    """A ';' file with decimal commas: one field in the header, three in a line."""
    with pytest.raises(DataValidationError, match=r"^x\.csv: the delimiter looks wrong: .* "
                       "2 columns at each semicolon"):
        _rows(b"id;x\n1;2,5\n")


def test_a_one_column_header_and_a_quoted_delimiter_are_not_a_wrong_delimiter() -> None:
    for header in ("id", '"a;b"', '"a|b\tc"', "a,b;c"):
        assert wrong_delimiter(header) is None, header


def test_text_among_numbers_is_counted_with_line_numbers_in_any_block() -> None:
    """Text values early (the column is inferred as text) or late (pyarrow's conversion of a
    later block fails): the same count and lines either way; a quoted value over two lines
    and an empty line count in the line numbers."""
    lines = [b"id,x,t", b'1,1.5,"two', b'lines"', b""]
    lines += [b"%d,%s,a" % (i, b"n.a." if i % 400 == 7 else b"%d" % i) for i in range(2, 2001)]
    data = b"\n".join(lines) + b"\n"
    for block_size in (1 << 20, 1 << 10):
        with pytest.raises(DataValidationError) as caught:
            _rows(data, numeric_columns=["x"], block_size=block_size)
        assert caught.value.message == (
            "x.csv: column 'x' holds text in 5 of its 2,000 rows where numbers are expected, "
            "e.g. line 10: 'n.a.', line 410: 'n.a.', line 810: 'n.a.', line 1210: 'n.a.', "
            "line 1610: 'n.a.'. Correct the file at its source (an empty field is a missing "
            "value) and land it again.")


def test_a_header_repeated_mid_file_is_named_by_its_line() -> None:
    rows = PLAIN.split(b"\n")
    data = b"\n".join([*rows[:1500], rows[0], *rows[1500:]])
    for block_size in (1 << 20, 1 << 10):  # in the first block, or a later one
        with pytest.raises(DataValidationError) as caught:
            _rows(data, numeric_columns=["id", "x"], block_size=block_size)
        assert caught.value.message == (
            "x.csv: line 1501 repeats the header line ('id,x,t'), as files joined with their "
            "headers do: remove it. Correct the file at its source and land it again.")


def test_nulls_and_every_number_pyarrow_reads_are_not_text() -> None:
    values = ["", "NA", "n/a", "null", "NaN", "1", " 2 ", "+3", "-4.5", "1e5", ".5", "7.",
              "inf", "-Infinity", "unknown", "1,5"]
    data = "x\n" + "\n".join(f'"{v}"' for v in values) + "\n"
    found = why_not_numbers(io.BytesIO(data.encode()), "x.csv", ["x"])
    assert found is not None
    assert "holds text in 2 of its 16 rows" in found
    assert "line 16: 'unknown', line 17: '1,5'" in found


def test_a_file_that_cannot_be_read_again_says_which_columns() -> None:
    class Once(io.BytesIO):
        def seekable(self) -> bool:
            return False

        def seek(self, *args: Any) -> int:
            raise io.UnsupportedOperation("seek")

    with pytest.raises(DataValidationError, match=r"^x\.csv: columns \['x'\] are to hold "
                       "numbers but do not"):
        list(read_csv(Once(b"x\n1\nunknown\n"), "x.csv", numeric_columns=["x"]))


def test_columns_the_caller_does_not_use_are_read_as_text() -> None:
    """An unused column whose later block is not a number does not stop the read."""
    data = b"id,other\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(2000)) + b"9,text\n"
    table = _rows(data, columns=["id"], numeric_columns=["id"], block_size=1 << 10)
    assert table.num_rows == 2_001
    assert table.schema.field("other").type == pa.string()
    assert table.schema.field("id").type == pa.int64()
