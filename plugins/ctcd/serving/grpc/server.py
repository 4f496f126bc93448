"""gRPC methods of ``inference.GRPCInferenceService`` mapped onto the data plane.

Each call checks the caller (metadata ``authorization: Bearer <token>``, as the REST
prediction routes do), then goes through :class:`ctcd.serving.handlers.ModelServer`:
the same version routing and traffic split, signature validation, batching, metrics
(protocol ``grpc``) and request log as REST. Errors keep their message (which names the
field) and map to gRPC codes: 400 -> INVALID_ARGUMENT, 401 -> UNAUTHENTICATED, 404 ->
NOT_FOUND, 503 -> UNAVAILABLE, 500 -> INTERNAL (a generic message naming the request's
correlation id, the detail in the server's log). ``ModelInfer`` takes the correlation id
from the metadata key ``x-request-id`` (else makes one) and returns it in the trailing
metadata under the same key, with ``x-model-runtime``: what answered (``onnxruntime`` for a
compiled model, else the model's flavor), as REST's header of that name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import numpy as np

from ctcd.serving import auth, correlation
from ctcd.serving.errors import InvalidInput, ServingError
from ctcd.serving.grpc import SERVICE, protos
from ctcd.serving.handlers import ModelServer, internal_error
from ctcd.serving.protocols import ScoringRequest, v2, v2_tensors
from ctcd.serving.protocols.v2_binary import tensor_from_bytes, to_bytes
from ctcd.serving.registry import VersionSlot
from ctcd.serving.schema import InputSchema

RUNTIME_METADATA: Final = "x-model-runtime"  # trailing metadata: the runtime that answered
_CODES: Final[dict[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# datatype -> the InferTensorContents field that carries it
_CONTENTS: Final[dict[str, str]] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_FIELD_DTYPES: Final[dict[str, str]] = {
    "bool_contents": "bool", "int_contents": "int32", "int64_contents": "int64",
    "uint_contents": "uint32", "uint64_contents": "uint64", "fp32_contents": "float32",
    "fp64_contents": "float64",
}

Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
log = logging.getLogger("ctcd.serving")


def code_of(status: int) -> grpc.StatusCode:
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


class InferenceService:
    """The six V2 methods; ``token``: bearer token of model calls (None: open)."""

    def __init__(self, server: ModelServer, token: str | None = None) -> None:
        self.server = server
        self.token = token
        self.pb, _ = protos()

    def handler(self) -> grpc.GenericRpcHandler:
        pb = self.pb
        methods: dict[str, tuple[Method, Any, bool]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, True),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, True),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, True),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, True),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, True),
            # ModelInfer answers bytes already serialized by the data plane's encoder
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, False),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(fn), request_deserializer=message.FromString,
                response_serializer=_serialize if serialize else None)
            for name, (fn, message, serialize) in methods.items()})

    def _check(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        auth.check_token(metadata.get("authorization"), self.token, "predictions")

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.pb.ServerReadyResponse(ready=self.server.ready())

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return self.pb.ServerMetadataResponse(**v2.server_metadata())

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._check(context)
        ready = self.server.model_ready(request.name, request.version or None)
        return self.pb.ModelReadyResponse(ready=ready)

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._check(context)
        meta = self.server.model_metadata(request.name, request.version or None)
        cls = self.pb.ModelMetadataResponse.TensorMetadata

        def tensor(t: dict[str, Any]) -> Any:  # the message has no parameters (classes)
            return cls(name=t["name"], datatype=t["datatype"], shape=t["shape"])

        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(t) for t in meta["inputs"]],
            outputs=[tensor(t) for t in meta["outputs"]])

    async def model_infer(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        rid = request_id(context)
        self._check(context)
        slot = self.server.route(request.model_name, request.model_version or None)

        def checked(schema: InputSchema | None) -> ScoringRequest:
            scoring = decode(request, schema, slot.model.output_names)
            scoring.meta["id"] = scoring.meta.get("id") or rid
            return scoring

        answer = await self.server.score(
            slot, "grpc", checked, lambda s, scoring, output: self.encode(s, scoring, output),
            rid)
        # what answered, as REST's x-model-runtime header says it (the version is in the body)
        context.set_trailing_metadata(((correlation.METADATA, rid),
                                       (RUNTIME_METADATA, answer.runtime)))
        if answer.error is not None:
            await context.abort(code_of(answer.status), answer.error)
        return answer.body

    def encode(self, slot: VersionSlot, request: ScoringRequest, output: Any) -> bytes:
        response = self.pb.ModelInferResponse(model_name=self.server.name,
                                               model_version=slot.version,
                                               id=request.meta.get("id", ""))
        raw = request.meta.get("raw", False)
        for name, array in v2_tensors.named_outputs(request, output):
            datatype = v2_tensors.output_datatype(array)
            tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            if raw:
                response.raw_output_contents.append(to_bytes(array))
            elif datatype == "BYTES":
                tensor.contents.bytes_contents.extend(
                    v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
            else:
                getattr(tensor.contents, _CONTENTS[datatype]).extend(array.ravel().tolist())
        return response.SerializeToString()  # type: ignore[no-any-return]


def decode(request: Any, schema: InputSchema | None,
           available: tuple[str, ...]) -> ScoringRequest:
    """A ModelInferRequest -> a checked request (typed contents or raw_input_contents)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput("raw_input_contents", f"has {len(raw)} entries for "
                           f"{len(request.inputs)} inputs; send one per input, in order")
    if not request.inputs:
        raise InvalidInput("inputs", "must be a non-empty list of tensors")
    tensors = []
    for i, item in enumerate(request.inputs):
        name, datatype, shape = v2_tensors.check_header(i, {"name": item.name,
                                                    "datatype": item.datatype,
                                                    "shape": list(item.shape)})
        if raw:
            tensors.append(tensor_from_bytes(name, datatype, shape, raw[i]))
            continue
        if datatype == "FP16":
            raise InvalidInput(f"inputs.{name}.contents", "FP16 travels only in "
                               "raw_input_contents")
        field = _CONTENTS[datatype]
        values = getattr(item.contents, field)
        # numbers straight into an array (in C; a list of Python floats first costs 10x)
        flat = list(values) if datatype == "BYTES" else np.array(values, _FIELD_DTYPES[field])
        tensors.append(v2_tensors.tensor_from_values(name, datatype, shape, flat))
    outputs = v2.requested_outputs(
        [{"name": o.name, "parameters": {}} for o in request.outputs] or None, available)
    scoring = v2.to_request(tensors, schema, request_id=request.id or None, outputs=outputs)
    scoring.meta["raw"] = bool(raw)
    return scoring


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()  # type: ignore[no-any-return]


def request_id(context: grpc.aio.ServicerContext) -> str:
    """The call's correlation id (metadata ``x-request-id``, else a new one), set in the
    trailing metadata; a malformed one is INVALID_ARGUMENT, answered under a new id."""
    given = dict(context.invocation_metadata() or ()).get(correlation.METADATA)
    try:
        rid = correlation.accept(given if isinstance(given, str) else None)
    except InvalidInput:
        context.set_trailing_metadata(((correlation.METADATA, correlation.new_id()),))
        raise
    context.set_trailing_metadata(((correlation.METADATA, rid),))
    return rid


def _guarded(fn: Method) -> Method:
    """Turn the data plane's errors into gRPC status codes with their message; anything
    unexpected into INTERNAL with a generic message (the detail goes to the log)."""
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except ServingError as err:
            await context.abort(code_of(err.status_code), err.message)
        except grpc.aio.AbortError:
            raise
        except Exception:  # the last resort: the client gets no internals
            rid = dict(context.trailing_metadata() or ()).get(correlation.METADATA)
            if not rid:
                rid = correlation.new_id()
                context.set_trailing_metadata(((correlation.METADATA, rid),))
            log.exception("request %s: gRPC %s failed", rid, type(request).__name__)
            await context.abort(grpc.StatusCode.INTERNAL, internal_error(str(rid)))

    return call


def create_server(service: InferenceService, host: str, port: int,
                  max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server on the running event loop, bound (SO_REUSEPORT, so every worker
    of ``--workers N`` serves the same port); returns it and its port."""
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ])
    server.add_generic_rpc_handlers((service.handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    return server, bound
