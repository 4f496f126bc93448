"""The KServe V2 / Open Inference Protocol: tensors in, tensors out, whatever carries them.

A tabular model takes one input tensor per column (``name`` = column, shape ``[n]`` or
``[n, 1]``), or one ``[n, k]`` tensor whose ``k`` columns are the signature's numeric
columns in order. A tensor-signature model takes its one tensor. Outputs: ``predict``
(one row per input row; one output per column when the model returns a table) by
default; a request may name the outputs it wants (``predict``, and ``predict_proba``
for a classifier: shape ``[n, classes]``, FP64, the class of each column in the model
metadata).

:func:`to_request` turns decoded tensors into a checked :class:`ScoringRequest`, for every
wire form: JSON (:func:`decode` / :func:`encode`), the binary tensor data extension
(:mod:`.v2_binary`), and gRPC (:mod:`ctcd.serving.grpc`); the tensors themselves and the
model's output as named arrays are :mod:`.v2_tensors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, Final

import numpy as np
import orjson
import yaml

from ctcd.serving.columns import KIND_DTYPES
from ctcd.serving.errors import InvalidInput, UnsupportedMediaType
from ctcd.serving.protocols import ScoringRequest
from ctcd.serving.protocols.v2_tensors import (
    DATATYPES,
    NUMPY_TO_V2,
    Tensor,
    named_outputs,
    output_datatype,
    output_json,
    tensor_from_json,
)
from ctcd.serving.schema import (
    InputSchema,
    Table,
    check_columns,
    check_matrix,
    check_tensor,
)

# what a column of each kind takes on the one-pass path: its datatype, its values' one
# Python type, the dtype the checked path gives the column
_CLEAN_COLUMNS: Final[dict[str, tuple[str, set[type], np.dtype[Any]]]] = {
    "double": ("FP64", {float}, np.dtype(np.float64)),
    "float": ("FP64", {float}, np.dtype(np.float32)),
    "long": ("INT64", {int}, np.dtype(np.int64)),
    "string": ("BYTES", {str}, np.dtype(object)),
}
_FLOATS: Final = {float}
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


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False


def server_metadata() -> dict[str, Any]:
    return {"name": "ctcd", "version": package_version("ctcd"),
            "extensions": ["binary_tensor_data"]}


def model_metadata(name: str, slots: Sequence[Any]) -> dict[str, Any]:
    model = slots[0].model if slots else None
    schema: InputSchema | None = model.schema if model is not None else None
    inputs: list[dict[str, Any]] = []
    if schema is not None and schema.tensor is not None:
        dtype = NUMPY_TO_V2.get(schema.tensor.dtype, "FP64")
        inputs = [{"name": "input-0", "datatype": dtype, "shape": list(schema.tensor.shape)}]
    elif schema is not None:
        inputs = [
            {"name": c.name, "datatype": NUMPY_TO_V2.get(KIND_DTYPES[c.kind], "BYTES"),
             "shape": [-1]}
            for c in schema.columns
        ]
    shape = list(getattr(model, "predict_shape", None) or (-1,))
    outputs = [{"name": "predict", "datatype": predict_datatype(model), "shape": shape}]
    classes = getattr(model, "classes", None)
    for output, (_, width) in (model.extra_outputs if model is not None else {}).items():
        entry: dict[str, Any] = {"name": output, "datatype": "FP64", "shape": [-1, width]}
        if output == "predict_proba" and classes:
            entry["parameters"] = {"classes": list(classes)}  # one label per column
        outputs.append(entry)
    doc: dict[str, Any] = {
        "name": name,
        "versions": [s.version for s in slots],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": outputs,
    }
    parameters: dict[str, Any] = {}
    task = getattr(model, "task", None)
    if task is not None:
        parameters["task"] = task
    if model is not None:
        parameters.update(model.compiled_view())
    if parameters:
        doc["parameters"] = parameters
    return doc


def predict_datatype(model: Any) -> str:
    """The datatype of the ``predict`` output: what the model answered at warm-up
    (a classifier's labels, a regressor's floats); else the output signature the model was
    logged with; else FP64."""
    if model is None:
        return "FP64"
    seen = getattr(model, "predict_dtype", None)
    if seen is not None:
        return output_datatype(np.empty(0, dtype=seen))
    try:
        meta = yaml.safe_load((model.local_path / "MLmodel").read_text())
        specs = orjson.loads(((meta or {}).get("signature") or {}).get("outputs") or "[]")
    except (OSError, yaml.YAMLError, orjson.JSONDecodeError, AttributeError):
        return "FP64"
    if len(specs) != 1 or not isinstance(specs[0], dict):
        return "FP64"
    spec = specs[0]
    if spec.get("type") == "tensor":
        dtype = str((spec.get("tensor-spec") or {}).get("dtype"))
    else:
        dtype = KIND_DTYPES.get(str(spec.get("type")), "float64")
    return output_datatype(np.empty(0, dtype=dtype)) if dtype in DATATYPES.values() else "FP64"


def decode(body: bytes, content_type: str | None, schema: InputSchema | None,
           outputs: Sequence[str] = ("predict",)) -> ScoringRequest:
    """A JSON inference request; ``outputs``: the output names the model has."""
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(content_type, ("application/json",))
    doc = parse_header(body)
    table = clean_columns(doc["inputs"], schema)
    if table is None:
        table = clean_matrix(doc["inputs"], schema)
    if table is not None:
        return from_document(doc, [], schema, outputs, table=table)
    tensors = [tensor_from_json(i, item) for i, item in enumerate(doc["inputs"])]
    return from_document(doc, tensors, schema, outputs)


def clean_columns(items: list[Any], schema: InputSchema | None) -> Table | None:
    """The table of JSON column tensors that need no checking beyond their types: one
    tensor per signature column, each of shape ``[n]`` or ``[n, 1]`` with the same ``n``,
    ``FP64`` floats for a float column, ``INT64`` integers (within int64) for an integer
    one, ``BYTES`` strings for a string one. One type pass and one conversion per column,
    with the same arrays the checked path builds. None for anything else: the checked
    path then names what is wrong, or converts what it may."""
    if schema is None or schema.tensor is not None or len(items) != len(schema.columns):
        return None
    specs = schema.by_name
    arrays: dict[str, np.ndarray] = {}
    rows = -1
    for item in items:
        if type(item) is not dict:
            return None
        spec = specs.get(item.get("name"))  # type: ignore[arg-type]
        data, shape = item.get("data"), item.get("shape")
        if spec is None or spec.name in arrays or type(data) is not list:
            return None
        clean = _CLEAN_COLUMNS.get(spec.kind)
        n = len(data)
        if (clean is None or not n or (rows >= 0 and n != rows) or item.get("datatype")
                != clean[0] or (shape != [n] and shape != [n, 1]) or type(shape[0]) is not int
                or type(shape[-1]) is not int or set(map(type, data)) != clean[1]):
            return None  # (a shape of [1.0] or [True] equals [1]: its types are checked)
        rows = n
        try:  # JSON has no NaN nor infinity (orjson refuses both)
            array = np.array(data, dtype=clean[2])
        except OverflowError:  # an integer outside int64
            return None
        arrays[spec.name] = array
    return Table({name: arrays[name] for name in schema.names}, rows)


def clean_matrix(items: list[Any], schema: InputSchema | None) -> Table | None:
    """The table of one JSON ``[n, k]`` ``FP64`` tensor of floats (not named after a column)
    for a model whose ``k`` columns are all floats: the block the checked path builds
    (:func:`tensor_from_json`, then :func:`to_request`'s matrix case), in one conversion
    after one type pass. JSON has no NaN nor infinity (orjson refuses both), so floats need
    no value check. None for anything else: the checked path then names what is wrong, or
    converts what it may (integers, nested rows, other datatypes)."""
    if schema is None or len(items) != 1:
        return None
    block_dtype = schema.block_dtype  # None for a tensor signature or mixed column types
    if block_dtype is None or block_dtype.kind != "f":
        return None
    item = items[0]
    if type(item) is not dict or item.get("datatype") != "FP64":
        return None
    name, shape, data = item.get("name"), item.get("shape"), item.get("data")
    if (type(name) is not str or not name or name in schema.by_name or type(data) is not list
            or type(shape) is not list or len(shape) != 2):
        return None
    rows, width = shape
    if (type(rows) is not int or type(width) is not int or rows < 1
            or width != len(schema.columns) or rows * width != len(data)
            or set(map(type, data)) != _FLOATS):
        return None
    # straight to the block's dtype: the checked path's float64 step changes no value
    block = np.array(data, dtype=block_dtype).reshape(rows, width)
    return Table(None, rows, block=block, names=schema.names)


def parse_header(body: bytes) -> dict[str, Any]:
    """The JSON document of an inference request, with its top-level fields checked."""
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
    for key in ("parameters",):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise InvalidInput(key, "must be an object")
    return doc


def from_document(doc: dict[str, Any], tensors: list[Tensor], schema: InputSchema | None,
                  available: Sequence[str], *, table: Table | None = None) -> ScoringRequest:
    """The checked request of a parsed JSON document (JSON or binary body); ``table``:
    its inputs, already checked (see :func:`clean_columns`)."""
    binary_default = bool((doc.get("parameters") or {}).get("binary_data_output", False))
    requested = requested_outputs(doc.get("outputs"), available, binary_default)
    return to_request(tensors, schema, request_id=doc.get("id"), outputs=requested,
                      binary_default=binary_default, table=table)


def requested_outputs(items: Any, available: Sequence[str],
                      binary_default: bool = False) -> list[RequestedOutput]:
    """The ``outputs`` of a request, each a known output name (else a 4xx naming it)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidInput("outputs", "must be a list of {name, parameters}")
    out: list[RequestedOutput] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{i}].name", "must be a non-empty string")
        if name not in available:
            raise InvalidInput(f"outputs[{i}].name", f"{name!r} is not an output of this "
                               f"model; it has {list(available)}")
        if any(o.name == name for o in out):
            raise InvalidInput(f"outputs[{i}].name", f"{name!r} is asked for twice")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"outputs[{i}].parameters", "must be an object")
        out.append(RequestedOutput(name, bool(parameters.get("binary_data", binary_default))))
    return out


def to_request(tensors: list[Tensor], schema: InputSchema | None, *,
               request_id: str | None = None, outputs: Sequence[RequestedOutput] = (),
               binary_default: bool = False, table: Table | None = None) -> ScoringRequest:
    """Decoded input tensors (or their ``table``, already checked) -> a request checked
    against the signature."""
    names = tuple(o.name for o in outputs)
    # a request without an id answers with its correlation id (set by the transport)
    meta = {"id": request_id, "outputs": list(outputs),
            "binary": binary_default}
    selected = () if names in ((), ("predict",)) else names  # plain predict is the default
    if table is not None:
        return ScoringRequest(table=table, meta=meta, outputs=selected)
    if schema is None:
        import pandas as pd

        frame = pd.DataFrame({t.name: _column(t.array, t.datatype) for t in tensors})
        return ScoringRequest(frame=frame, meta=meta, outputs=selected)
    if schema.tensor is not None:
        if len(tensors) != 1:
            raise InvalidInput("inputs", f"this model takes one tensor, got {len(tensors)}")
        return ScoringRequest(table=check_tensor(schema.tensor, tensors[0].array, "inputs[0]"),
                              meta=meta, outputs=selected)
    columns = schema.names
    first = tensors[0]
    if len(tensors) == 1 and first.name not in columns and first.array.ndim == 2:
        array = first.array
        if array.shape[1] != len(columns):
            raise InvalidInput(f"inputs[0] ({first.name})", f"has {array.shape[1]} columns, "
                               f"the model expects {len(columns)}: {list(columns)}")
        fast = check_matrix(schema, columns, array)
        if fast is not None:
            return ScoringRequest(table=fast, meta=meta, outputs=selected)
        raw = {c: _column(array[:, j], first.datatype) for j, c in enumerate(columns)}
        return ScoringRequest(table=check_columns(schema, raw, "inputs."), meta=meta,
                              outputs=selected)
    raw = {}
    kinds = {c.name: c.kind for c in schema.columns}
    for tensor in tensors:
        name, datatype, array = tensor.name, tensor.datatype, tensor.array
        if name in raw:
            raise InvalidInput(f"inputs.{name}", "is given twice")
        if name in kinds and datatype not in _KIND_DATATYPES[kinds[name]]:
            allowed = sorted(_KIND_DATATYPES[kinds[name]])
            raise InvalidInput(f"inputs.{name}.datatype", f"is {datatype}; column {name!r} "
                               f"is {kinds[name]}, send one of {allowed}")
        if (array.ndim == 2 and array.shape[1] != 1) or array.ndim > 2:
            raise InvalidInput(f"inputs.{name}.shape", f"is {list(array.shape)}; a column "
                               "tensor has shape [n] or [n, 1]")
        column = array.reshape(-1) if array.ndim == 2 else array
        if datatype == "BYTES" and kinds.get(name) != "binary":
            column = _text(column, f"inputs.{name}.data")
        raw[name] = column
    return ScoringRequest(table=check_columns(schema, raw, "inputs."), meta=meta,
                          outputs=selected)


def _column(array: np.ndarray, datatype: str) -> np.ndarray:
    column = array.reshape(len(array), -1)[:, 0] if array.ndim > 1 else array
    return _text(column, "inputs") if datatype == "BYTES" else column


def _text(array: np.ndarray, where: str) -> np.ndarray:
    """BYTES elements as str (the binary extension and gRPC carry raw bytes)."""
    if not any(issubclass(t, bytes) for t in set(map(type, array))):  # one pass in C
        return array
    try:
        return np.array([v.decode() if isinstance(v, bytes) else v for v in array],
                        dtype=object)
    except UnicodeDecodeError:
        raise InvalidInput(where, "holds bytes that are not UTF-8 text") from None


def encode(model_name: str, version: str, request: ScoringRequest, output: Any) -> bytes:
    """A JSON response (see :mod:`.v2_binary` for binary outputs)."""
    outputs = [output_json(name, array) for name, array in named_outputs(request, output)]
    return orjson.dumps(
        {"model_name": model_name, "model_version": version, "id": request.meta.get("id"),
         "parameters": {}, "outputs": outputs},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
