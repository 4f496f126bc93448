"""The V2 tensor, whatever wire carries it: the datatypes, a tensor checked from its header
and values (JSON, the binary extension and gRPC build theirs here), and a model's output as
named arrays with their V2 datatypes and JSON form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ctcd.serving.errors import InvalidInput
from ctcd.serving.protocols import ScoringRequest

DATATYPES: Final[dict[str, str]] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
NUMPY_TO_V2: Final = {v: k for k, v in DATATYPES.items()}
# by dtype object: an output's ``dtype.name`` is computed in Python on every access
_DTYPE_TO_V2: Final[dict[np.dtype[Any], str]] = {
    np.dtype(v): ("FP32" if k == "FP16" else k) for k, v in DATATYPES.items() if k != "BYTES"}


@dataclass(frozen=True)
class Tensor:
    """One decoded input tensor: its V2 name and datatype, data shaped as sent."""

    name: str
    datatype: str
    array: np.ndarray


def check_header(index: int, item: Any) -> tuple[str, str, list[int]]:
    """Name, datatype and shape of ``inputs[index]`` (JSON or binary), checked."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise InvalidInput(where, "must be an object {name, shape, datatype, data}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name", "must be a non-empty string")
    where = f"inputs.{name}"
    for key in ("shape", "datatype"):
        if key not in item:
            raise InvalidInput(f"{where}.{key}", "is required")
    shape, datatype = item["shape"], item["datatype"]
    check_shape(where, shape)
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"{where}.datatype", f"is {datatype!r}; use one of "
                           f"{sorted(DATATYPES)}")
    return name, datatype, shape


def check_shape(where: str, shape: Any) -> None:
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                       for d in shape)):
        raise InvalidInput(f"{where}.shape", f"must be a list of sizes >= 0, got {shape!r}")


def tensor_from_json(index: int, item: Any) -> Tensor:
    name, datatype, shape = check_header(index, item)
    where = f"inputs.{name}"
    if "data" not in item:
        raise InvalidInput(f"{where}.data", "is required")
    data = item["data"]
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data", "must be a list")
    return tensor_from_values(name, datatype, shape, _flatten(data))


def tensor_from_values(name: str, datatype: str, shape: list[int],
                       flat: Sequence[Any] | np.ndarray) -> Tensor:
    """A tensor from its flat values (a list, or an array of the wire's type), checked
    against its datatype and shape."""
    where = f"inputs.{name}"
    if len(flat) != math.prod(shape):
        raise InvalidInput(f"{where}.data", f"has {len(flat)} values but shape {shape} needs "
                           f"{math.prod(shape)}")
    if datatype == "BYTES":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            array = np.asarray(flat)
        except ValueError:
            raise InvalidInput(f"{where}.data", "must hold scalars") from None
        want = np.dtype(DATATYPES[datatype])
        ok = (array.dtype.kind == "b") if want.kind == "b" else (
            array.dtype.kind in ("iu" if want.kind in "iu" else "iuf"))
        if array.size and (not ok or (array.dtype.kind == "b" and want.kind != "b")):
            raise InvalidInput(f"{where}.data", f"holds values that are not {datatype}")
        if want.kind in "iu" and array.size and (array.min() < np.iinfo(want).min
                                                 or array.max() > np.iinfo(want).max):
            raise InvalidInput(f"{where}.data", f"holds values outside the range of {datatype}")
        array = array.astype(want)
    return Tensor(name, datatype, array.reshape(shape))


def _flatten(data: list[Any]) -> list[Any]:
    if list not in set(map(type, data)):  # one pass in C (JSON arrays are exact lists)
        return data
    return _flatten_recursive(data)


def _flatten_recursive(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in data:
        if isinstance(value, list):
            out.extend(_flatten_recursive(value))
        else:
            out.append(value)
    return out


def named_outputs(request: ScoringRequest, output: Any) -> list[tuple[str, np.ndarray]]:
    """The model's output as (name, array) pairs, in the order the request asked for."""
    import pandas as pd

    if request.outputs:  # a dict {output name: result}, from LoadedModel.predict(outputs=)
        out = []
        for name in request.outputs:
            value = output[name]
            if isinstance(value, (pd.Series, pd.DataFrame)):
                value = value.to_numpy()
            array = np.asarray(value)
            out.append((name, array.astype("float64") if name == "predict_proba" else array))
        return out
    if isinstance(output, pd.DataFrame):
        return [(str(c), output[c].to_numpy()) for c in output.columns]
    if isinstance(output, pd.Series):
        output = output.to_numpy()
    return [("predict", np.asarray(output))]


def binary_flags(request: ScoringRequest, names: Sequence[str]) -> list[bool]:
    """Whether each output goes in binary form (binary extension)."""
    asked = {o.name: o.binary for o in request.meta.get("outputs", ())}
    default = bool(request.meta.get("binary", False))
    return [asked.get(name, default) for name in names]


def output_datatype(array: np.ndarray) -> str:
    datatype = _DTYPE_TO_V2.get(array.dtype)
    if datatype is None:  # text, objects, or a non-native byte order
        datatype = NUMPY_TO_V2.get(array.dtype.name, "BYTES")
    return "FP32" if datatype == "FP16" else datatype


def output_json(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = output_datatype(array)
    if datatype == "BYTES":
        data: Any = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    else:
        data = np.ascontiguousarray(array.ravel())
        if array.dtype.kind == "f" and array.dtype.itemsize < 8:
            data = data.astype("float64")  # each value in full (see protocols.jsonable)
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
