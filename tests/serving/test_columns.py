"""One column's values checked against its kind, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from ctcd.serving.columns import ColumnSpec, as_sent, coerce_column
from ctcd.serving.errors import InvalidInput


@pytest.mark.parametrize(
    ("kind", "values", "dtype"),
    [("long", [1, 2], "int64"), ("long", [1.0, 2.0], "int64"), ("double", [1, 2.5], "float64"),
     ("float", [1.5], "float32"), ("integer", [3], "int32"), ("boolean", [True], "bool"),
     ("string", ["x", "y"], "object"), ("datetime", ["2026-01-01T00:00:00"], "datetime64[ns]"),
     ("binary", ["aGk="], "object")],
)
def test_coerce_accepts(kind: str, values: list[object], dtype: str) -> None:
    out = coerce_column(ColumnSpec("c", kind), values, "c")
    assert out.dtype == np.dtype(dtype)
    assert len(out) == len(values)


@pytest.mark.parametrize(
    ("kind", "values", "where"),
    [("long", [1, "x"], "c[1]"), ("long", [1, 1.5], "c[1]"), ("double", [None], "c[0]"),
     ("double", [float("nan")], "c[0]"), ("string", ["a", 1], "c[1]"), ("boolean", [1], "c[0]"),
     ("integer", [2**40], "c"), ("long", "12", "c"), ("binary", ["%%"], "c")],
)
def test_coerce_rejects_naming_the_row(kind: str, values: object, where: str) -> None:
    with pytest.raises(InvalidInput) as info:
        coerce_column(ColumnSpec("c", kind), values, "c")
    assert info.value.field == where


def test_optional_double_takes_null_as_nan() -> None:
    out = coerce_column(ColumnSpec("c", "double", required=False), [1.0, None], "c")
    assert np.isnan(out[1])


def test_as_sent_shows_the_value_as_the_client_wrote_it() -> None:
    assert as_sent(np.float64(29.5)) == "29.5"
    assert as_sent("x") == "'x'"
