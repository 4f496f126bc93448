"""Signature parsing and column checks, without a server."""

from __future__ import annotations

import json

import pytest

from ctcd.serving.columns import ColumnSpec
from ctcd.serving.errors import InvalidInput
from ctcd.serving.schema import InputSchema, TensorSpec, check_columns, check_tensor


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


def test_text_columns_are_the_string_ones_in_signature_order() -> None:
    schema = InputSchema(columns=(ColumnSpec("plan", "string"), ColumnSpec("age", "long"),
                                  ColumnSpec("region", "string", False)))
    assert schema.text_columns == ("plan", "region")
    assert InputSchema(tensor=TensorSpec("float64", (-1, 3))).text_columns == ()


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
