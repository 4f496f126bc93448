"""What the server does, independent of HTTP: score a request on a version, and manage
versions (load, warm, split traffic, unload). The REST transport is a thin layer over
this; so is anything else that wants to drive a server in-process (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ctcd.serving.batching import Batcher
from ctcd.serving.errors import AdminConflict, InvalidInput, ModelLoadError, ServingError
from ctcd.serving.metrics import ServerMetrics
from ctcd.serving.model import LoadedModel
from ctcd.serving.protocols import ScoringRequest
from ctcd.serving.registry import ModelRegistry, VersionSlot
from ctcd.serving.schema import InputSchema

log = logging.getLogger(__name__)

ModelLoader = Callable[[str], LoadedModel]
Decoder = Callable[[InputSchema | None], ScoringRequest]
Encoder = Callable[[VersionSlot, ScoringRequest, Any], bytes]


class RequestSink(Protocol):
    def offer(self, *, model_name: str, version: str, protocol: str,
              request: ScoringRequest, output: Any, latency_ms: float) -> None: ...


@dataclass(frozen=True)
class BatchConfig:
    enabled: bool = True
    max_rows: int = 1024
    max_wait_ms: float = 0.0


@dataclass
class Answer:
    status: int
    body: bytes
    version: str


class ModelServer:
    def __init__(
        self,
        name: str,
        *,
        loader: ModelLoader,
        batching: BatchConfig | None = None,
        metrics: ServerMetrics | None = None,
        sink: RequestSink | None = None,
    ) -> None:
        self.name = name
        self.registry = ModelRegistry(name)
        self.metrics = metrics or ServerMetrics(name)
        self._loader = loader
        self._batching = batching or BatchConfig()
        self._sink = sink
        self._admin_lock = asyncio.Lock()

    # -- scoring ---------------------------------------------------------------------
    async def score(self, slot: VersionSlot, protocol: str, decode: Decoder,
                    encode: Encoder) -> Answer:
        """Decode, check, predict (batched), encode; count the outcome on ``slot``."""
        started = time.perf_counter()
        rows = 0
        request: ScoringRequest | None = None
        output: Any = None
        try:
            request = decode(slot.model.schema)
            output = await slot.batcher.score(request)
            rows = request.rows
            status, body = 200, encode(slot, request, output)
        except ServingError as err:
            status, body = err.status_code, _error_body(err.message)
        except Exception as err:
            log.exception("prediction failed on %s version %s", self.name, slot.version)
            status = 500
            body = _error_body(f"internal error while scoring: {type(err).__name__}: {err}")
        elapsed = time.perf_counter() - started
        slot.record(status, elapsed)
        self.metrics.observe_request(slot.version, protocol, status, elapsed, rows)
        if status == 200 and self._sink is not None and request is not None:
            self._sink.offer(model_name=self.name, version=slot.version, protocol=protocol,
                             request=request, output=output, latency_ms=elapsed * 1000)
        return Answer(status, body, slot.version)

    # -- versions --------------------------------------------------------------------
    def install(self, version: str, model: LoadedModel, weight: float = 0.0) -> VersionSlot:
        """Put an already loaded (and warmed) model into a slot."""
        batcher = Batcher(
            model,
            enabled=self._batching.enabled,
            max_rows=self._batching.max_rows,
            max_wait_ms=self._batching.max_wait_ms,
            observe=lambda requests, rows: self.metrics.observe_batch(version, requests, rows),
        )
        slot = VersionSlot(version=version, model=model, batcher=batcher)
        self.registry.add(slot)
        if weight:
            self.registry.set_weights({version: weight})
        self.metrics.set_weights({s.version: s.weight for s in self.registry.slots})
        return slot

    def load_blocking(self, model_uri: str) -> LoadedModel:
        """Load and warm a model; any failure is a ModelLoadError."""
        model = self._loader(model_uri)
        try:
            model.warm()
        except ServingError as err:
            raise ModelLoadError(model_uri, f"warm-up prediction failed: {err.message}") from err
        except (ValueError, TypeError, RuntimeError, AttributeError) as err:
            raise ModelLoadError(model_uri, f"warm-up prediction failed: "
                                 f"{type(err).__name__}: {err}") from err
        return model

    async def add_version(self, model_uri: object, version: object) -> tuple[int, dict[str, Any]]:
        """Load a version into a standby slot (weight 0). 201 when loaded, 200 when that
        version was already loaded from the same URI."""
        if not isinstance(model_uri, str) or not model_uri:
            raise InvalidInput("model_uri", "must be a non-empty string")
        if not isinstance(version, str) or not version:
            raise InvalidInput("version", "must be a non-empty string")
        async with self._admin_lock:
            existing = self.registry.find(version)
            if existing is not None:
                if existing.model_uri == model_uri:
                    return 200, existing.entry()
                raise AdminConflict(
                    f"version {version!r} is already loaded from {existing.model_uri}; "
                    "unload it first (DELETE /admin/versions/{version})"
                )
            # Loading runs in a thread: other versions keep serving meanwhile.
            model = await asyncio.to_thread(self.load_blocking, model_uri)
            slot = self.install(version, model)
        return 201, slot.entry()

    async def set_traffic(self, weights: Any) -> dict[str, Any]:
        async with self._admin_lock:
            self.registry.set_weights(weights)
            self.metrics.set_weights({s.version: s.weight for s in self.registry.slots})
        return self.registry.describe()

    async def remove_version(self, version: str) -> dict[str, Any]:
        async with self._admin_lock:
            slot = self.registry.remove(version)
            self.metrics.set_weights({}, removed=(version,))
        # In-flight requests hold the slot and finish; the predict thread exits after them.
        slot.batcher.close()
        return self.registry.describe()

    def close(self) -> None:
        for slot in self.registry.slots:
            slot.batcher.close()


def _error_body(message: str) -> bytes:
    import orjson

    return orjson.dumps({"error": message})
