"""A real CSV file with the damage landed files show, for the readers' tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

EXTRA_FIELD, TEXT_AGE, EMPTY_LINE_AFTER, MISSING_FIELD = 3, 7, 10, 12


@dataclass(frozen=True)
class MessyCsv:
    path: Path
    good: list[int]  # rows of the frame that parse and pass the checks
    bad_lines: dict[int, str]  # line number (the header is line 1) -> the line's text
    text_age: int  # the row with text in its numeric ``age`` column


def write_messy_csv(frame: pd.DataFrame, path: Path) -> MessyCsv:
    """``frame`` as UTF-8 with a byte-order mark, then damaged: row 3 has one field too many,
    row 7 says ``old`` for its age, an empty line follows row 10, row 12 lacks its last
    field, and the last row opens a quote it never closes."""
    text = frame.astype(object)
    text.loc[text.index[TEXT_AGE], "age"] = "old"
    header, *rows = text.to_csv(index=False, lineterminator="\n").rstrip("\n").split("\n")
    last = len(rows) - 1
    rows[EXTRA_FIELD] += ",9"
    rows[MISSING_FIELD] = rows[MISSING_FIELD].rsplit(",", 1)[0]
    rows[last] = '"' + rows[last]
    lines = [header, *rows[:EMPTY_LINE_AFTER + 1], "", *rows[EMPTY_LINE_AFTER + 1:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")

    def line(row: int) -> int:  # 1-based, after the header and the empty line
        return row + 2 + (row > EMPTY_LINE_AFTER)

    bad = {line(r): rows[r] for r in (EXTRA_FIELD, MISSING_FIELD, last)}
    good = [r for r in range(len(rows)) if r not in (EXTRA_FIELD, MISSING_FIELD, last, TEXT_AGE)]
    return MessyCsv(path, good, bad, TEXT_AGE)
