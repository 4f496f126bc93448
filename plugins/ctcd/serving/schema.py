"""The model's input signature, and turning request values into checked column arrays.

A request in any protocol is first reduced to plain columns (``name -> values``); this
module checks them against the signature (each column's values by
:func:`ctcd.serving.columns.coerce_column`) and returns a :class:`Table` of numpy arrays
whose dtypes are the ones MLflow's own schema enforcement would produce. Every problem
raises :class:`InvalidInput` naming the column (and row) and what was expected, so a
client never sees a 5xx for its own mistake.

The signature is read from the ``MLmodel`` JSON, not through mlflow, so the server can
start without importing mlflow when it does not need to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ctcd.serving.columns import (
    EXACT_FLOAT,
    FLOAT_KINDS,
    INT_KINDS,
    KIND_DTYPES,
    ColumnSpec,
    coerce_column,
)
from ctcd.serving.errors import InvalidInput


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class InputSchema:
    """A column signature (``columns``) or a single-tensor one (``tensor``)."""

    columns: tuple[ColumnSpec, ...] = ()
    tensor: TensorSpec | None = None

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def by_name(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @cached_property
    def text_columns(self) -> tuple[str, ...]:
        """The columns of kind ``string`` (a model takes them as Python strings)."""
        return tuple(c.name for c in self.columns if c.kind == "string")

    @cached_property
    def numeric_plan(self) -> tuple[tuple[str, np.dtype[Any], bool], ...] | None:
        """(name, dtype, integral) per column when every column is a number, else None."""
        if not self.columns or any(c.kind not in INT_KINDS and c.kind not in FLOAT_KINDS
                                   for c in self.columns):
            return None
        return tuple((c.name, np.dtype(KIND_DTYPES[c.kind]), c.kind in INT_KINDS)
                     for c in self.columns)

    @cached_property
    def block_dtype(self) -> np.dtype[Any] | None:
        """The one dtype of every column when all are numbers of one dtype (a block)."""
        plan = self.numeric_plan
        dtypes = {dtype for _, dtype, _ in plan or ()}
        return dtypes.pop() if len(dtypes) == 1 else None

    @classmethod
    def from_signature_json(cls, inputs_json: str | None) -> InputSchema | None:
        """Parse ``signature.inputs`` of an MLmodel file; None when the server cannot check
        it (no signature, unnamed columns, several tensors, nested types)."""
        if not inputs_json:
            return None
        specs = json.loads(inputs_json)
        if len(specs) == 1 and specs[0].get("type") == "tensor":
            tensor = specs[0]["tensor-spec"]
            return cls(tensor=TensorSpec(str(tensor["dtype"]), tuple(tensor["shape"])))
        columns = []
        for spec in specs:
            kind, name = spec.get("type"), spec.get("name")
            if not isinstance(kind, str) or kind not in KIND_DTYPES or name is None:
                return None
            columns.append(ColumnSpec(str(name), kind, bool(spec.get("required", True))))
        return cls(columns=tuple(columns)) if columns else None

    def synthetic_rows(self) -> Table:
        """One plausible row, to warm a model that was logged without an input example."""
        if self.tensor is not None:
            shape = tuple(1 if d == -1 else d for d in self.tensor.shape) or (1,)
            return Table({"": np.zeros(shape, dtype=self.tensor.dtype)}, shape[0])
        sample: dict[str, Any] = {
            "boolean": False, "integer": 0, "long": 0, "float": 0.0, "double": 0.0,
            "string": "", "binary": b"", "datetime": np.datetime64("2020-01-01", "ns"),
        }
        arrays = {
            c.name: np.array([sample[c.kind]], dtype=KIND_DTYPES[c.kind]) for c in self.columns
        }
        return Table(arrays, 1)


class Table:
    """Checked input, in signature column order: one array per column (``""`` for a
    tensor), or, when every column is a number of one dtype, one 2-D ``block`` (rows x
    columns). A block is what the model's DataFrame is made of without a copy, and what
    merging requests concatenates in one call."""

    __slots__ = ("_arrays", "block", "names", "rows")

    def __init__(self, arrays: Mapping[str, np.ndarray] | None, rows: int, *,
                 block: np.ndarray | None = None, names: tuple[str, ...] = ()) -> None:
        self._arrays = arrays
        self.rows = rows
        self.block = block
        self.names = names if block is not None else tuple(arrays or ())

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        if self._arrays is None:
            if self.block is None:  # the constructor takes one or the other
                raise TypeError("a Table holds column arrays or a block")
            self._arrays = {n: self.block[:, j] for j, n in enumerate(self.names)}
        return self._arrays

    @staticmethod
    def concat(tables: Sequence[Table]) -> Table:
        if len(tables) == 1:
            return tables[0]
        rows = sum(t.rows for t in tables)
        blocks = [t.block for t in tables if t.block is not None]
        if len(blocks) == len(tables):
            return Table(None, rows, block=np.concatenate(blocks), names=tables[0].names)
        names = tables[0].arrays.keys()
        return Table({n: np.concatenate([t.arrays[n] for t in tables]) for n in names}, rows)

    def to_model_input(self) -> Any:
        """The model's DataFrame (ndarray for a tensor). Text columns stay numpy object
        columns, the dtype MLflow's schema enforcement gives a ``string`` column: pandas 3
        would otherwise convert them to Arrow strings, and scikit-learn's encoders convert
        them back, both per value (about a tenth of a churn-pipeline predict)."""
        import pandas as pd

        if self.block is not None:
            return pd.DataFrame(self.block, columns=self.names, copy=False)
        if "" in self.arrays:
            return self.arrays[""]
        return pd.DataFrame(
            {name: pd.Series(array, dtype=object, copy=False) if array.dtype.kind == "O"
             else array for name, array in self.arrays.items()}, copy=False)


def check_columns(schema: InputSchema, raw: Mapping[str, Any], where: str) -> Table:
    """Check ``column -> values`` against a column signature; ``where`` prefixes field names."""
    expected = schema.names
    missing = [n for n in expected if n not in raw]
    if missing:
        raise InvalidInput(
            f"{where}{missing[0]}",
            f"missing column(s) {missing}; the model expects columns {list(expected)}",
        )
    extra = [n for n in raw if n not in set(expected)]
    if extra:
        raise InvalidInput(
            f"{where}{extra[0]}",
            f"unexpected column(s) {extra}; the model expects columns {list(expected)}",
        )
    rows: int | None = None
    arrays: dict[str, np.ndarray] = {}
    for spec in schema.columns:
        values = raw[spec.name]
        array = coerce_column(spec, values, f"{where}{spec.name}")
        if rows is None:
            rows = len(array)
        elif len(array) != rows:
            raise InvalidInput(
                f"{where}{spec.name}",
                f"has {len(array)} values but column {schema.columns[0].name!r} has {rows}; "
                "every column needs one value per row",
            )
        arrays[spec.name] = array
    if not rows:
        raise InvalidInput(f"{where.rstrip('.') or 'body'}", "no rows to score")
    return Table(arrays, rows)


def check_matrix(schema: InputSchema, columns: Sequence[str], rows: Any) -> Table | None:
    """Fast path for rows of numbers (``dataframe_split`` of a numeric model, a V2
    ``[n, k]`` tensor): one numpy conversion for the whole body instead of one per column.
    Returns None when the input is not clean, numeric and complete; the caller then takes
    the column-by-column path, which names the exact problem."""
    plan = schema.numeric_plan
    if plan is None or len(columns) != len(plan):
        return None
    if list(columns) == list(schema.names):
        positions: Sequence[int] = range(len(plan))
    else:
        where = {name: j for j, name in enumerate(columns)}
        if len(where) != len(plan) or any(name not in where for name, _, _ in plan):
            return None
        positions = [where[name] for name, _, _ in plan]
    try:
        matrix = np.asarray(rows)
    except ValueError:
        return None
    if matrix.ndim != 2 or matrix.shape[1] != len(plan) or not matrix.shape[0]:
        return None
    kind = matrix.dtype.kind
    if kind == "f":
        if np.isnan(matrix).any():
            return None
    elif kind not in "iu":
        return None
    block_dtype = schema.block_dtype
    if block_dtype is not None:  # one conversion, one block: no per-column arrays
        if plan[0][2] and kind == "f" and ((matrix != np.floor(matrix)).any()
                                           or np.abs(matrix).max() >= EXACT_FLOAT):
            return None
        block = matrix if isinstance(positions, range) else matrix[:, positions]
        return Table(None, int(matrix.shape[0]), block=block.astype(block_dtype, copy=False),
                     names=schema.names)
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, integral), j in zip(plan, positions, strict=True):
        column = matrix[:, j]
        if integral and kind == "f" and ((column != np.floor(column)).any()
                                         or np.abs(column).max() >= EXACT_FLOAT):
            return None
        arrays[name] = column.astype(dtype)
    return Table(arrays, int(matrix.shape[0]))


def check_tensor(spec: TensorSpec, values: Any, field: str) -> Table:
    try:
        array = np.asarray(values)
    except ValueError:
        raise InvalidInput(field, "is ragged; every row needs the same shape") from None
    if array.dtype.kind not in "iufb" or (array.dtype.kind == "b" and spec.dtype != "bool"):
        raise InvalidInput(field, f"expected numbers of type {spec.dtype}")
    want = spec.shape
    mismatch = any(w not in (-1, g) for w, g in zip(want, array.shape, strict=False))
    if array.ndim != len(want) or mismatch:
        raise InvalidInput(field, f"has shape {list(array.shape)}, expected {list(want)}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise InvalidInput(field, "contains NaN")
    try:
        out = array.astype(spec.dtype, casting="same_kind")
    except TypeError:
        raise InvalidInput(field, f"cannot be cast safely to {spec.dtype}") from None
    if array.shape[0] == 0:
        raise InvalidInput(field, "no rows to score")
    return Table({"": out}, int(array.shape[0]))
