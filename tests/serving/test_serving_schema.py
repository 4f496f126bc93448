"""Signature parsing and column checks, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctcd.serving.errors import InvalidInput
from ctcd.serving.schema import (
    ColumnSpec,
    InputSchema,
    TensorSpec,
    check_columns,
    check_tensor,
    coerce_column,
)


def test_signature_json_of_columns_and_tensors() -> None:
    cols = InputSchema.from_signature_json(json.dumps([
        {"type": "long", "name": "a", "required": True},
        {"type": "string", "name": "b", "required": False}]))
    assert cols == InputSchema(columns=(ColumnSpec("a", "long"), ColumnSpec("b", "string",
                                                                             False)))
    tensor = InputSchema.from_signature_json(json.dumps([
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]))
    assert tensor == InputSchema(tensor=TensorSpec("float64", (-1, 3)))
    assert InputSchema.from_signature_json(None) is None
    assert InputSchema.from_signature_json(json.dumps([{"type": "long"}])) is None


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


def test_check_columns_orders_by_signature() -> None:
    schema = InputSchema(columns=(ColumnSpec("a", "long"), ColumnSpec("b", "double")))
    table = check_columns(schema, {"b": [0.5], "a": [1]}, "")
    assert list(table.arrays) == ["a", "b"]
    assert table.rows == 1


def test_check_tensor_shape_and_nan() -> None:
    spec = TensorSpec("float64", (-1, 2))
    assert check_tensor(spec, [[1, 2], [3, 4]], "x").rows == 2
    with pytest.raises(InvalidInput, match="shape"):
        check_tensor(spec, [[1, 2, 3]], "x")
    with pytest.raises(InvalidInput, match="NaN"):
        check_tensor(spec, [[1, float("nan")]], "x")
