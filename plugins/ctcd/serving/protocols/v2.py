"""The KServe V2 / Open Inference Protocol (REST).

A tabular model takes one input tensor per column (``name`` = column, shape ``[n]`` or
``[n, 1]``), or one ``[n, k]`` tensor whose ``k`` columns are the signature's numeric
columns in order. A tensor-signature model takes its one tensor. Outputs: ``predict``
(one row per input row), or one output per column when the model returns a table.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import Any, Final

import numpy as np
import orjson

from ctcd.serving.errors import InvalidInput, ModelNotFound, UnsupportedMediaType
from ctcd.serving.protocols import ScoringRequest
from ctcd.serving.schema import (
    KIND_DTYPES,
    InputSchema,
    check_columns,
    check_matrix,
    check_tensor,
)

# ids of requests that bring none: unique per process start, without a uuid4 (an
# os.urandom call) per request
_ID_PREFIX: Final = uuid.uuid4().hex[:16]
_ID_COUNTER: Final = itertools.count(1)

DATATYPES: Final[dict[str, str]] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}
_NUMPY_TO_V2: Final = {v: k for k, v in DATATYPES.items()}
_KIND_DATATYPES: Final[dict[str, frozenset[str]]] = {
    "boolean": frozenset({"BOOL"}),
    "integer": frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"}),
    "long": frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"}),
    "float": frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}),
    "double": frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}),
    "string": frozenset({"BYTES"}),
    "binary": frozenset({"BYTES"}),
    "datetime": frozenset({"BYTES"}),
}


def model_not_found(name: str) -> ModelNotFound:
    return ModelNotFound(name)


def server_metadata() -> dict[str, Any]:
    return {"name": "ctcd", "version": package_version("ctcd"), "extensions": []}


def model_metadata(name: str, slots: Sequence[Any]) -> dict[str, Any]:
    schema: InputSchema | None = slots[0].model.schema if slots else None
    inputs: list[dict[str, Any]] = []
    if schema is not None and schema.tensor is not None:
        dtype = _NUMPY_TO_V2.get(schema.tensor.dtype, "FP64")
        inputs = [{"name": "input-0", "datatype": dtype, "shape": list(schema.tensor.shape)}]
    elif schema is not None:
        inputs = [
            {"name": c.name, "datatype": _NUMPY_TO_V2.get(KIND_DTYPES[c.kind], "BYTES"),
             "shape": [-1]}
            for c in schema.columns
        ]
    return {
        "name": name,
        "versions": [s.version for s in slots],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
    }


def decode(body: bytes, content_type: str | None, schema: InputSchema | None) -> ScoringRequest:
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(content_type, ("application/json",))
    if not body:
        raise InvalidInput("body", "is empty; send {\"inputs\": [{name, shape, datatype, "
                           "data}]}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput("body", f"is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body", "must be a JSON object with 'inputs'")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs", "must be a non-empty list of {name, shape, datatype, data}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id", "must be a string")
    tensors = [_tensor(i, item) for i, item in enumerate(inputs)]
    meta = {"id": request_id or f"{_ID_PREFIX}-{next(_ID_COUNTER)}"}
    if schema is None:
        import pandas as pd

        frame = pd.DataFrame({name: array.reshape(len(array), -1)[:, 0] if array.ndim > 1
                              else array for name, _, array in tensors})
        return ScoringRequest(frame=frame, meta=meta)
    if schema.tensor is not None:
        if len(tensors) != 1:
            raise InvalidInput("inputs", f"this model takes one tensor, got {len(tensors)}")
        return ScoringRequest(table=check_tensor(schema.tensor, tensors[0][2], "inputs[0]"),
                              meta=meta)
    names = schema.names
    if len(tensors) == 1 and tensors[0][0] not in names and tensors[0][2].ndim == 2:
        name, datatype, array = tensors[0]
        if array.shape[1] != len(names):
            raise InvalidInput(f"inputs[0] ({name})", f"has {array.shape[1]} columns, the "
                               f"model expects {len(names)}: {list(names)}")
        fast = check_matrix(schema, names, array)
        if fast is not None:
            return ScoringRequest(table=fast, meta=meta)
        raw = {c: array[:, j] for j, c in enumerate(names)}
        return ScoringRequest(table=check_columns(schema, raw, "inputs."), meta=meta)
    raw = {}
    kinds = {c.name: c.kind for c in schema.columns}
    for name, datatype, array in tensors:
        if name in raw:
            raise InvalidInput(f"inputs.{name}", "is given twice")
        if name in kinds and datatype not in _KIND_DATATYPES[kinds[name]]:
            allowed = sorted(_KIND_DATATYPES[kinds[name]])
            raise InvalidInput(f"inputs.{name}.datatype", f"is {datatype}; column {name!r} "
                               f"is {kinds[name]}, send one of {allowed}")
        if (array.ndim == 2 and array.shape[1] != 1) or array.ndim > 2:
            raise InvalidInput(f"inputs.{name}.shape", f"is {list(array.shape)}; a column "
                               "tensor has shape [n] or [n, 1]")
        raw[name] = array.reshape(-1) if array.ndim == 2 else array
    return ScoringRequest(table=check_columns(schema, raw, "inputs."), meta=meta)


def _tensor(index: int, item: Any) -> tuple[str, str, np.ndarray]:
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        raise InvalidInput(where, "must be an object {name, shape, datatype, data}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name", "must be a non-empty string")
    where = f"inputs.{name}"
    missing = [k for k in ("shape", "datatype", "data") if k not in item]
    if missing:
        raise InvalidInput(f"{where}.{missing[0]}", "is required")
    shape, datatype, data = item["shape"], item["datatype"], item["data"]
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                       for d in shape)):
        raise InvalidInput(f"{where}.shape", f"must be a list of sizes >= 0, got {shape!r}")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}.datatype", f"is {datatype!r}; use one of "
                           f"{sorted(DATATYPES)}")
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data", "must be a list")
    flat = _flatten(data)
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
        if not ok or (array.dtype.kind == "b" and want.kind != "b"):
            raise InvalidInput(f"{where}.data", f"holds values that are not {datatype}")
        if want.kind in "iu" and array.size and (array.min() < np.iinfo(want).min
                                                 or array.max() > np.iinfo(want).max):
            raise InvalidInput(f"{where}.data", f"holds values outside the range of {datatype}")
        array = array.astype(want)
    return name, datatype, array.reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
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


def encode(model_name: str, version: str, request: ScoringRequest, output: Any) -> bytes:
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        outputs = [_output(str(c), output[c].to_numpy()) for c in output.columns]
    else:
        if isinstance(output, pd.Series):
            output = output.to_numpy()
        outputs = [_output("predict", np.asarray(output))]
    return orjson.dumps(
        {"model_name": model_name, "model_version": version, "id": request.meta.get("id"),
         "parameters": {}, "outputs": outputs},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _output(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = _NUMPY_TO_V2.get(array.dtype.name, "BYTES")
    if datatype == "BYTES":
        data: Any = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    else:
        data = np.ascontiguousarray(array.ravel())
        if datatype == "FP16":
            data, datatype = data.astype("float32"), "FP32"
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
