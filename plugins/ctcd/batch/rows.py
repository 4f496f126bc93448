"""Check many rows at once against a model signature and keep the good ones.

The model server refuses a whole request when one value is wrong; a scoring job must score
the good rows and set the bad ones aside, each with a reason naming its field. Checking
is the server's own (:func:`ctcd.serving.columns.coerce_column`, one vectorized call per
column), so a row the server accepts is a row a job accepts. Only when a column fails is it
split in halves until each bad value is found: a clean chunk costs one check per column,
``k`` bad values about ``2 k log n`` smaller ones.

A data set spec (``ctcd.data.spec``), when given, adds its ranges and categories: a value
the model would score but the data set says cannot happen is rejected too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctcd.data.spec import DatasetSpec
from ctcd.serving.columns import (
    EXPECTED,
    FLOAT_KINDS,
    INT_KINDS,
    ColumnSpec,
    as_sent,
    coerce_column,
)
from ctcd.serving.errors import InvalidInput
from ctcd.serving.schema import InputSchema, Table

_NUMERIC = INT_KINDS | FLOAT_KINDS
# What a numeric field read from text may say for "no value"; text columns keep these words
# as text (a category may well be "none" or "NA").
NULL_WORDS = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "<NA>", "#N/A")


@dataclass(frozen=True)
class Checked:
    """Rows that passed (``table``, in input order; None when none did), their positions in
    the input (``kept``) and a reason for every other position (``rejects``)."""

    table: Table | None
    kept: np.ndarray
    rejects: dict[int, str] = field(default_factory=dict)


def check_rows(
    schema: InputSchema,
    columns: Mapping[str, Any],
    rows: int,
    *,
    spec: DatasetSpec | None = None,
    where: str = "",
    text: bool = False,
) -> Checked:
    """Check ``rows`` values of every signature column in ``columns`` (lists or arrays).

    ``where`` prefixes field names in reasons (``data.age: ...``). ``text`` says the values
    came from text (CSV): numbers written as text are parsed, not refused as strings.
    """
    bad: dict[int, str] = {}
    whole: dict[str, np.ndarray] = {}
    sources: dict[str, Any] = {}
    for col in schema.columns:
        name = f"{where}{col.name}"
        values = columns[col.name]
        if text and col.kind in _NUMERIC:
            values = _parse_numbers(col, values, name, bad)
        sources[col.name] = values
        fast = _clean_text(col, values)
        if fast is not None:
            whole[col.name] = fast
            continue
        try:
            whole[col.name] = coerce_column(col, values, name)
        except InvalidInput:
            _bisect(col, values, name, 0, rows, bad)
    kept = _kept(rows, bad)
    arrays: dict[str, np.ndarray] = {}
    for col in schema.columns:
        if col.name in whole:
            arrays[col.name] = whole[col.name] if len(kept) == rows else whole[col.name][kept]
        else:
            arrays[col.name] = coerce_column(col, _take(sources[col.name], kept),
                                             f"{where}{col.name}")
    if spec is not None and len(kept):
        violations = spec_violations(spec, arrays, where)
        if violations:
            for i, reason in violations.items():
                bad.setdefault(int(kept[i]), reason)
            keep = np.ones(len(kept), dtype=bool)
            keep[list(violations)] = False
            kept = kept[keep]
            arrays = {n: a[keep] for n, a in arrays.items()}
    table = Table(arrays, len(kept)) if len(kept) else None
    return Checked(table, kept, bad)


def spec_violations(spec: DatasetSpec, arrays: Mapping[str, np.ndarray],
                    where: str = "") -> dict[int, str]:
    """Row -> reason for values outside the spec's ranges or categories."""
    out: dict[int, str] = {}
    for feature in spec.features:
        values = arrays.get(feature.name)
        if values is None or not len(values):
            continue
        name = f"{where}{feature.name}"
        if feature.is_numeric:
            numbers = values.astype("float64", copy=False)
            with np.errstate(invalid="ignore"):
                if feature.min is not None:
                    for i in np.flatnonzero(numbers < feature.min):
                        out.setdefault(int(i), f"{name}: {as_sent(values[i])} is below the "
                                       f"minimum {feature.min:g} of data set {spec.name!r}")
                if feature.max is not None:
                    for i in np.flatnonzero(numbers > feature.max):
                        out.setdefault(int(i), f"{name}: {as_sent(values[i])} is above the "
                                       f"maximum {feature.max:g} of data set {spec.name!r}")
        elif feature.categories is not None:
            series = pd.Series(values, dtype=object, copy=False)
            unknown = ~(series.isin(feature.categories) | series.isna()).to_numpy()
            for i in np.flatnonzero(unknown):
                out.setdefault(int(i), f"{name}: {as_sent(values[i])} is not one of the "
                               f"categories {list(feature.categories)} of data set {spec.name!r}")
    return out



def _clean_text(col: ColumnSpec, values: Any) -> np.ndarray | None:
    """A text column whose every value is a string, as is, checked in one C pass (the
    server's check looks at each value in Python); None to take the general check."""
    if col.kind != "string" or not isinstance(values, np.ndarray) or values.ndim != 1:
        return None
    if values.dtype.kind == "U":
        return values.astype(object)
    if values.dtype.kind == "O" and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return None


def _bisect(col: ColumnSpec, values: Any, name: str, lo: int, hi: int,
            bad: dict[int, str]) -> None:
    """Find every value of ``values[lo:hi]`` the signature refuses (one failed check
    already says the span holds at least one)."""
    if hi - lo == 1:
        try:
            coerce_column(col, values[lo:hi], name)
        except InvalidInput as err:
            bad.setdefault(lo, _one_row_reason(err, name))
        return
    mid = (lo + hi) // 2
    for a, b in ((lo, mid), (mid, hi)):
        try:
            coerce_column(col, values[a:b], name)
        except InvalidInput:
            _bisect(col, values, name, a, b, bad)


def _one_row_reason(err: InvalidInput, name: str) -> str:
    """``age[0]: expected ...`` of a one-value check -> ``age: expected ...``."""
    problem = err.message[len(err.field) + 2:] if err.message.startswith(err.field) else err.message
    return f"{name}: {problem}"


def _parse_numbers(col: ColumnSpec, values: Any, name: str, bad: dict[int, str]) -> Any:
    """Text of a numeric column -> numbers (a blank field or a null word is null); text that
    is not a number is a reject. Vectorized: one pass in C per column."""
    array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if array.dtype.kind in "iufb":
        return array
    series = pd.Series(array, dtype=object, copy=False)
    blank = (series.isna() | series.str.strip().isin(NULL_WORDS)).to_numpy(dtype=bool)
    parsed = pd.to_numeric(series.mask(blank), errors="coerce")
    wrong = parsed.isna().to_numpy() & ~blank
    if not wrong.any():
        return parsed.to_numpy()
    for i in np.flatnonzero(wrong):
        bad.setdefault(int(i), f"{name}: expected {EXPECTED[col.kind]} ({col.kind}), "
                       f"got {as_sent(array[i])}")
    return parsed.mask(wrong, 0).to_numpy()


def _kept(rows: int, bad: Mapping[int, str]) -> np.ndarray:
    if not bad:
        return np.arange(rows)
    mask = np.ones(rows, dtype=bool)
    mask[list(bad)] = False
    return np.flatnonzero(mask)


def _take(values: Any, positions: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[positions]
    return [values[i] for i in positions]
