"""The CSV reader on real bytes: line numbers through empty lines, bad lines and quotes."""

from __future__ import annotations

import io

import pyarrow as pa

from ctcd.data.csv_reader import BadLine, read_csv


def test_empty_lines_are_counted_in_line_numbers_across_read_boundaries() -> None:
    data = b"h,v\r\n1,2\r\n\r\n\r\n3,4,5\r\n\r\n6\r\n"
    bad: list[BadLine] = []
    read = [b for _, b in read_csv(io.BytesIO(data), "x.csv", on_bad_line=bad.append,
                                   block_size=64) if not isinstance(b, pa.Schema)]
    assert sum(b.num_rows for b in read) == 1
    assert [(b.line, b.text) for b in bad] == [(5, "3,4,5"), (7, "6")]


def test_an_unterminated_quote_mid_file_rejects_its_line_only() -> None:
    """The parser runs a field with an unterminated quote on to the end of its block; the
    lines it swallowed are read again, with their own numbers, empty lines and bad lines
    among them included, in small blocks and large."""
    lines = ["h,v,t", "1,1,a", '2,"2,b', "", "3,3,c", '"4,4,d', "5,5", "", "6,6,f", "7"]
    lines += [f"{i},{i},x" for i in range(8, 60)]
    data = "\r\n".join(lines).encode() + b"\r\n"
    for block_size in (64, 1 << 20):
        bad: list[BadLine] = []
        read = [b for _, b in read_csv(io.BytesIO(data), "x.csv", on_bad_line=bad.append,
                                       block_size=block_size) if not isinstance(b, pa.Schema)]
        table = pa.Table.from_batches(read)
        assert sorted(table.column("h").to_pylist()) == [1, 3, 6, *range(8, 60)]
        assert table.schema.field("v").type == pa.int64()
        assert sorted((b.line, b.text, b.found) for b in bad) == [
            (3, '2,"2,b', 2), (6, '"4,4,d', 1), (7, "5,5", 2), (10, "7", 1)]
        by_line = {b.line: b.reason for b in bad}
        assert by_line[3] == ("unparsable: line 3 of x.csv: 2 fields where the header has 3 "
                              "(an unterminated quote)")
        assert by_line[7] == "unparsable: line 7 of x.csv: 2 fields where the header has 3"
