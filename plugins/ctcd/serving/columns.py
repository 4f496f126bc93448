"""One column's values as the signature says they must be: the MLflow data types, their
numpy dtypes, and :func:`coerce_column`, which turns a request's (or a file's) values of one
column into an array of that dtype or raises :class:`InvalidInput` naming the column, the
row and what was expected."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ctcd.serving.errors import InvalidInput

# MLflow DataType name -> numpy dtype the column is given before predict.
KIND_DTYPES: Final[dict[str, str]] = {
    "boolean": "bool",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "object",
    "binary": "object",
    "datetime": "datetime64[ns]",
}
INT_KINDS: Final = frozenset({"integer", "long"})
FLOAT_KINDS: Final = frozenset({"float", "double"})
EXACT_FLOAT: Final = 2.0**53  # float64 holds every integer below this exactly
EXPECTED: Final[dict[str, str]] = {
    "boolean": "a boolean",
    "integer": "an integer",
    "long": "an integer",
    "float": "a number",
    "double": "a number",
    "string": "a string",
    "binary": "a base64 string",
    "datetime": "an ISO-8601 date-time string",
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str
    required: bool = True


def coerce_column(spec: ColumnSpec, values: Any, field: str) -> np.ndarray:
    """Values of one column -> an array of the signature's dtype, or InvalidInput."""
    if isinstance(values, np.ndarray):
        source = values
    else:
        if not isinstance(values, (list, tuple)):
            raise InvalidInput(field, f"expected a list of values, got {_describe(values)}")
        try:
            if spec.kind in ("string", "binary"):
                source = np.array(values, dtype=object)  # keep each value's own type
            else:
                source = np.asarray(values)
                if source.dtype.kind in "US":  # numpy turned mixed values into text
                    source = np.array(values, dtype=object)
                elif (source.dtype.kind == "f" and spec.kind in INT_KINDS and source.size
                      and np.abs(source).max() >= EXACT_FLOAT):
                    source = _exact_integers(values, field)  # float64 would round them
        except ValueError:  # ragged nesting
            raise InvalidInput(field, "expected one scalar value per row") from None
    if source.ndim == 2 and source.shape[1] == 1:
        source = source[:, 0]
    if source.ndim != 1:
        raise InvalidInput(field, f"expected one scalar value per row, got shape {source.shape}")
    kind = spec.kind
    if kind in INT_KINDS or kind in FLOAT_KINDS:
        return _numeric(spec, source, field)
    if kind == "boolean":
        if source.dtype.kind != "b":
            _first_bad(spec, source, field, lambda v: isinstance(v, (bool, np.bool_)))
        return source.astype("bool")
    if kind == "string":
        out = source.astype(object)
        if set(map(type, out)) != {str}:  # the common case costs one pass in C
            _first_bad(spec, out, field, lambda v: isinstance(v, str))
        return out
    if kind == "binary":
        out = source.astype(object)
        _first_bad(spec, out, field, lambda v: isinstance(v, (str, bytes)))
        try:
            decoded = [v if isinstance(v, bytes) else base64.b64decode(v, validate=True)
                       for v in out]
        except (binascii.Error, ValueError):
            raise InvalidInput(field, "expected base64-encoded strings") from None
        return np.array(decoded, dtype=object)
    try:  # datetime
        out = source.astype("datetime64[ns]")
    except (ValueError, TypeError):
        raise InvalidInput(field, f"expected {EXPECTED[kind]} in every row") from None
    if spec.required and np.isnat(out).any():
        raise InvalidInput(f"{field}[{int(np.isnat(out).argmax())}]", "is null but required")
    return out


def _numeric(spec: ColumnSpec, source: np.ndarray, field: str) -> np.ndarray:
    dtype = np.dtype(KIND_DTYPES[spec.kind])
    k = source.dtype.kind
    if k not in "iuf":
        # bools, strings, None or mixed values: find the first one that is not a number
        _first_bad(
            spec, source, field,
            lambda v: (v is None and not spec.required)
            or (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_))),
        )
        if spec.kind in INT_KINDS:
            if any(v is None for v in source):
                raise InvalidInput(field, "is null in some row; the column is integer-typed")
            try:
                source = source.astype("int64")
            except OverflowError:
                raise InvalidInput(field, "has a value outside the range of int64") from None
            return _numeric(spec, source, field)
        source = source.astype("float64")  # None -> NaN for an optional float column
        k = "f"
    if k == "f":
        nan = np.isnan(source)
        if nan.any() and spec.required:
            raise InvalidInput(
                f"{field}[{int(nan.argmax())}]", f"is NaN/null but {EXPECTED[spec.kind]} "
                "is required"
            )
        if spec.kind in INT_KINDS:
            frac = source != np.floor(source)
            if frac.any():
                row = int(frac.argmax())
                raise InvalidInput(
                    f"{field}[{row}]", f"expected an integer, got {as_sent(source[row])}"
                )
    if dtype.kind == "i" and k in "iuf":  # floats too: a huge JSON integer arrives as one
        info = np.iinfo(dtype)
        if source.size and (source.min() < info.min or source.max() > info.max
                            or (k == "f" and source.max() >= -float(info.min))):
            raise InvalidInput(field, f"has a value outside the range of {dtype}")
    return source.astype(dtype, copy=False)


def _exact_integers(values: Sequence[Any], field: str) -> np.ndarray:
    """Integers given as JSON integers stay exact; a float (a JSON number with a fraction
    or exponent, or an integer too large for int64, which JSON parsers turn into a float)
    must be an integer below 2**53 in magnitude to be taken as one."""
    for row, value in enumerate(values):
        if isinstance(value, float) and (not value.is_integer() or abs(value) >= EXACT_FLOAT):
            raise InvalidInput(f"{field}[{row}]", f"expected an integer within int64 "
                               f"written as a JSON integer, got {value!r}")
    try:
        return np.array(values, dtype="int64")
    except OverflowError:
        raise InvalidInput(field, "has a value outside the range of int64") from None
    except (TypeError, ValueError):
        return np.array(values, dtype=object)  # mixed types: the column check names them


def _first_bad(spec: ColumnSpec, values: np.ndarray, field: str, ok: Any) -> None:
    for row, value in enumerate(values.tolist() if values.dtype.kind != "O" else values):
        if value is None or (isinstance(value, float) and value != value):
            if spec.required:
                raise InvalidInput(f"{field}[{row}]", "is null but required")
            continue
        if not ok(value):
            raise InvalidInput(
                f"{field}[{row}]",
                f"expected {EXPECTED[spec.kind]} ({spec.kind}), got {_describe(value)}",
            )


def as_sent(value: Any) -> str:
    """A value as the client wrote it (``29.5``, not numpy's ``np.float64(29.5)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _describe(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
