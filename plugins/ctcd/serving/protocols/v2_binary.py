"""The V2 binary tensor data extension over REST (what Triton clients and the KServe SDK
send for numpy inputs).

A request with the header ``Inference-Header-Content-Length: N`` has a JSON inference
request in its first N bytes and raw tensor data after it: each input whose
``parameters.binary_data_size`` is set takes that many bytes, in order. Numbers are
little-endian, BOOL one byte each, BYTES elements a 4-byte little-endian length and the
bytes. Outputs go in the same form when asked (``parameters.binary_data_output`` on the
request, or ``parameters.binary_data`` per output); the answer then carries
``Inference-Header-Content-Length`` and ``application/octet-stream``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import orjson

from ctcd.serving.errors import InvalidInput, UnsupportedMediaType
from ctcd.serving.protocols import Reply, ScoringRequest, v2, v2_tensors
from ctcd.serving.schema import InputSchema

HEADER: Final = "Inference-Header-Content-Length"
OCTET_STREAM: Final = "application/octet-stream"
_ACCEPTED: Final = ("application/octet-stream", "application/json")


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's size from ``Inference-Header-Content-Length``; None without it."""
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) > body_size:
        raise InvalidInput(HEADER, f"must be the size in bytes of the JSON header, at most "
                           f"the body's {body_size} bytes; got {value!r}")
    return int(value)


def decode(body: bytes, length: int, content_type: str | None, schema: InputSchema | None,
           outputs: Sequence[str] = ("predict",)) -> ScoringRequest:
    if content_type and content_type.split(";")[0].strip().lower() not in _ACCEPTED:
        raise UnsupportedMediaType(content_type, _ACCEPTED)
    doc = v2.parse_header(body[:length])
    view = memoryview(body)[length:]
    offset = 0
    tensors = []
    for i, item in enumerate(doc["inputs"]):
        size = (item.get("parameters") or {}).get("binary_data_size") if isinstance(
            item, dict) else None
        if size is None:
            tensors.append(v2_tensors.tensor_from_json(i, item))
            continue
        name, datatype, shape = v2_tensors.check_header(i, item)
        where = f"inputs.{name}.parameters.binary_data_size"
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(where, f"must be a size in bytes, got {size!r}")
        if offset + size > len(view):
            raise InvalidInput(where, f"is {size} but only {len(view) - offset} bytes of "
                               "tensor data are left in the body")
        tensors.append(tensor_from_bytes(name, datatype, shape, view[offset:offset + size]))
        offset += size
    if offset != len(view):
        raise InvalidInput("body", f"has {len(view) - offset} bytes after the last tensor; "
                           "the binary_data_size of the inputs must add up to the data sent")
    return v2.from_document(doc, tensors, schema, outputs)


def tensor_from_bytes(name: str, datatype: str, shape: list[int], raw: Any) -> v2_tensors.Tensor:
    """A tensor from its raw bytes (the binary extension; gRPC ``raw_input_contents``)."""
    count = math.prod(shape)
    where = f"inputs.{name}"
    if datatype == "BYTES":
        values = _split_bytes(raw, where)
        if len(values) != count:
            raise InvalidInput(f"{where}.data", f"has {len(values)} BYTES elements but shape "
                               f"{shape} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = values
        return v2_tensors.Tensor(name, datatype, array.reshape(shape))
    dtype = np.dtype(v2_tensors.DATATYPES[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"{where}.data", f"has {len(raw)} bytes but shape {shape} of "
                           f"{datatype} needs {count * dtype.itemsize}")
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    return v2_tensors.Tensor(name, datatype, array.reshape(shape))


def _split_bytes(raw: Any, where: str) -> list[bytes]:
    data = bytes(raw)
    values: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInput(f"{where}.data", "ends inside a BYTES length prefix")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise InvalidInput(f"{where}.data", f"a BYTES element of {size} bytes runs past "
                               "the end of the tensor data")
        values.append(data[offset:offset + size])
        offset += size
    return values


def to_bytes(array: np.ndarray) -> bytes:
    """An output tensor's raw bytes (little-endian; BYTES length-prefixed)."""
    if v2_tensors.output_datatype(array) == "BYTES":
        parts = []
        for value in array.ravel():
            item = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    if array.dtype.name == "float16":
        array = array.astype("float32")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode(model_name: str, version: str, request: ScoringRequest,
           output: Any) -> bytes | Reply:
    """JSON, or JSON header + raw outputs when any output is asked for in binary."""
    named = v2_tensors.named_outputs(request, output)
    flags = v2_tensors.binary_flags(request, [name for name, _ in named])
    if not any(flags):
        return v2.encode(model_name, version, request, output)
    outputs, chunks = [], []
    for (name, array), binary in zip(named, flags, strict=True):
        if not binary:
            outputs.append(v2_tensors.output_json(name, array))
            continue
        raw = to_bytes(array)
        chunks.append(raw)
        outputs.append({"name": name, "shape": list(array.shape),
                        "datatype": v2_tensors.output_datatype(array),
                        "parameters": {"binary_data_size": len(raw)}})
    head = orjson.dumps({"model_name": model_name, "model_version": version,
                         "id": request.meta.get("id"), "parameters": {},
                         "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return Reply(b"".join([head, *chunks]), OCTET_STREAM, {HEADER: str(len(head))})
