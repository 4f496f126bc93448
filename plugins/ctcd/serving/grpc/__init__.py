"""The V2 gRPC transport: ``inference.GRPCInferenceService`` (the Open Inference
Protocol's gRPC service) over the same data plane as REST.

The messages come from ``open_inference.proto`` beside this file, compiled in memory when
the server starts with ``--grpc-port`` (``grpc.protos_and_services``, which needs
``grpcio-tools``, pinned in requirements.txt to the release of the installed grpcio /
protobuf). Compiling at start keeps generated code out of the repository and cannot
drift from the installed protobuf runtime; it costs a fraction of a second, and nothing
when gRPC is off.
"""

from __future__ import annotations

import sys
import threading
from functools import cache
from pathlib import Path
from typing import Any

PROTO = Path(__file__).with_name("open_inference.proto")
SERVICE = "inference.GRPCInferenceService"
_LOCK = threading.Lock()


@cache
def protos() -> tuple[Any, Any]:
    """The compiled messages and service stubs (modules ``open_inference_pb2[_grpc]``)."""
    import grpc

    with _LOCK:  # protoc resolves the file through sys.path
        sys.path.insert(0, str(PROTO.parent))
        try:
            return grpc.protos_and_services(PROTO.name)  # type: ignore[no-any-return]
        finally:
            sys.path.remove(str(PROTO.parent))
