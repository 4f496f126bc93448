"""The data plane: what the server does, independent of any transport. Score a request
on a version (decode, validate, batch, predict, encode, count, log), answer model
metadata and readiness, and manage versions (load, warm, split traffic, unload).

The transports (:mod:`ctcd.serving.rest`, :mod:`ctcd.serving.grpc`) are thin layers
that turn their wire messages into calls here; the admin API's multi-worker fan-out is in
:mod:`ctcd.serving.admin`. Anything else that drives a server in-process (tests,
benchmarks) calls this too."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctcd.serving.batching import Batcher
from ctcd.serving.errors import (
    AdminConflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ServingError,
)
from ctcd.serving.metrics import ServerMetrics
from ctcd.serving.model import LoadedModel
from ctcd.serving.protocols import Reply, ScoringRequest
from ctcd.serving.registry import ModelRegistry, VersionSlot
from ctcd.serving.schema import InputSchema
from ctcd.serving.shadow import SampleSink, Shadow, ShadowLimits, ShadowPlan

log = logging.getLogger(__name__)

ModelLoader = Callable[[str], LoadedModel]
Decoder = Callable[[InputSchema | None], ScoringRequest]
Encoder = Callable[[VersionSlot, ScoringRequest, Any], "bytes | Reply"]


class RequestSink(Protocol):
    def offer(self, *, model_name: str, version: str, protocol: str, request_id: str,
              request: ScoringRequest, output: Any, latency_ms: float) -> None: ...


@dataclass(frozen=True)
class BatchConfig:
    enabled: bool = True
    max_rows: int = 4096
    max_wait_ms: float = 0.0
    threads: int = 1  # native threads of each predict (0: the libraries' default)


@dataclass
class Answer:
    """The outcome of one scoring request: ``body`` (encoded by the protocol) when
    ``status`` is 200, else ``error`` (a message naming the field / what to do)."""

    status: int
    body: bytes
    version: str
    request_id: str
    error: str | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    runtime: str = ""  # what answered: onnxruntime (compiled), or the model's own flavor


def internal_error(request_id: str) -> str:
    """What a client is told of an unexpected server error (the detail is in the log)."""
    return (f"internal error; the model server's log has the detail under request id "
            f"{request_id}")


class ModelServer:
    def __init__(
        self,
        name: str,
        *,
        loader: ModelLoader,
        batching: BatchConfig | None = None,
        metrics: ServerMetrics | None = None,
        sink: RequestSink | None = None,
        shadow_limits: ShadowLimits | None = None,
        samples: Callable[[], SampleSink] | None = None,
    ) -> None:
        """``samples`` opens where a shadow's samples are written (the request log),
        when ``sink`` is not that already."""
        self.name = name
        self.registry = ModelRegistry(name)
        self.metrics = metrics or ServerMetrics(name)
        self._loader = loader
        self._batching = batching or BatchConfig()
        self._sink = sink
        self._admin_lock = asyncio.Lock()
        self.shadow: Shadow | None = None
        self._shadow_limits = shadow_limits or ShadowLimits(
            max_rows=self._batching.max_rows, threads=self._batching.threads)
        self._open_samples = samples

    # -- scoring ---------------------------------------------------------------------
    async def score(self, slot: VersionSlot, protocol: str, decode: Decoder,
                    encode: Encoder, request_id: str) -> Answer:
        """Decode, check, predict (batched), encode; count the outcome on ``slot``. An
        unexpected failure is answered with a generic message naming ``request_id`` (the
        request's correlation id) and logged in full under it: its text is the server's,
        not the client's, to read."""
        started = time.perf_counter()
        rows = 0
        request: ScoringRequest | None = None
        output: Any = None
        error: str | None = None
        encoded: bytes | Reply = b""
        try:
            request = decode(slot.model.schema)
            output = await slot.batcher.score(request)
            rows = request.rows
            status, encoded = 200, encode(slot, request, output)
        except ServingError as err:
            status, error = err.status_code, err.message
        except Exception:
            log.exception("request %s: prediction failed on %s version %s", request_id,
                          self.name, slot.version)
            status = 500
            error = internal_error(request_id)
        elapsed = time.perf_counter() - started
        slot.record(status, elapsed)
        self.metrics.observe_request(slot.version, protocol, status, elapsed, rows)
        if status == 200 and request is not None:
            if self._sink is not None:
                self._sink.offer(model_name=self.name, version=slot.version, protocol=protocol,
                                 request_id=request_id, request=request, output=output,
                                 latency_ms=elapsed * 1000)
            shadow = self.shadow
            if shadow is not None and slot is not shadow.slot:
                shadow.offer(request, request_id, slot.version, output, elapsed)
        if isinstance(encoded, Reply):
            return Answer(status, encoded.body, slot.version, request_id, error,
                          encoded.media_type, encoded.headers, slot.model.runtime)
        return Answer(status, encoded, slot.version, request_id, error,
                      runtime=slot.model.runtime)

    # -- model metadata and readiness (the V2 view of the model) ----------------------
    def ready(self) -> bool:
        """A version has traffic."""
        return self.registry.ready()

    def slot_for(self, model: str, version: str | None) -> VersionSlot | None:
        """The version a V2 metadata call names; None without one (the model as a whole)."""
        if model != self.name:
            raise ModelNotFound(model)
        return self.registry.get(version) if version is not None else None

    def route(self, model: str, version: str | None) -> VersionSlot:
        """The version a prediction names, or the one the traffic split picks."""
        if model != self.name:
            raise ModelNotFound(model)
        return self.registry.get(version) if version is not None else self.registry.pick()

    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        from ctcd.serving.protocols import v2

        slot = self.slot_for(model, version)
        return v2.model_metadata(self.name, [slot] if slot is not None else self.registry.slots)

    def model_ready(self, model: str, version: str | None = None) -> bool:
        slot = self.slot_for(model, version)
        return slot.state == "ready" if slot is not None else self.registry.ready()

    # -- versions --------------------------------------------------------------------
    def install(self, version: str, model: LoadedModel, weight: float = 0.0) -> VersionSlot:
        """Put an already loaded (and warmed) model into a slot."""
        batcher = Batcher(
            model,
            enabled=self._batching.enabled,
            max_rows=self._batching.max_rows,
            max_wait_ms=self._batching.max_wait_ms,
            threads=self._batching.threads,
            observe=lambda requests, rows: self.metrics.observe_batch(version, requests, rows),
        )
        slot = VersionSlot(version=version, model=model, batcher=batcher)
        self.registry.add(slot)
        if weight:
            self.registry.set_weights({version: weight})
        self.metrics.set_weights({s.version: s.weight for s in self.registry.slots})
        return slot

    def load_blocking(self, model_uri: str, *, compiled_later: bool = False) -> LoadedModel:
        """Load and warm a model; any failure is a ModelLoadError. ``compiled_later``: its
        compiled model is opened by :meth:`open_compiled`, not before it can answer."""
        model = self._loader(model_uri)
        try:
            model.warm(compiled_later=compiled_later)
        except ServingError as err:
            model.close()
            raise ModelLoadError(model_uri, f"warm-up prediction failed: {err.message}") from err
        except (ValueError, TypeError, RuntimeError, AttributeError) as err:
            model.close()
            raise ModelLoadError(model_uri, f"warm-up prediction failed: "
                                 f"{type(err).__name__}: {err}") from err
        return model

    def open_compiled(self) -> None:
        """Open each version's compiled model left for later, each in a thread of its own,
        while the original answers (the server does this once it is ready)."""
        for slot in self.registry.slots:
            threading.Thread(target=slot.model.open_compiled, daemon=True,
                             name=f"ctcd-compiled-{slot.version}").start()

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
            shadow = self.shadow
            if shadow is not None and shadow.slot.weight > 0:  # promoted: it is live now
                self._end_shadow("it was given traffic")
        return self.registry.describe()

    async def remove_version(self, version: str) -> dict[str, Any]:
        async with self._admin_lock:
            slot = self.registry.remove(version)
            self.metrics.set_weights({}, removed=(version,))
            if self.shadow is not None and self.shadow.slot is slot:
                self._end_shadow("it was unloaded")
        # In-flight requests hold the slot and finish; the predict thread exits after them.
        # The model is in memory: its downloaded files can go now.
        slot.batcher.close()
        slot.model.close()
        return self.registry.describe()

    # -- shadow ----------------------------------------------------------------------
    async def start_shadow(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Mirror a share of live requests to a loaded version with no traffic
        (:mod:`ctcd.serving.shadow`). Asking again for the same shadow changes nothing."""
        plan = ShadowPlan.parse(doc)
        async with self._admin_lock:
            running = self.shadow
            if running is not None:
                if running.plan == plan:
                    return self.shadow_state()
                raise AdminConflict(
                    f"version {running.plan.version} is shadowed already (since "
                    f"{running.started_at.isoformat()}); end it with DELETE /admin/shadow "
                    "first")
            slot = self.registry.find(plan.version)
            if slot is None:
                raise InvalidInput("version", f"version {plan.version!r} is not loaded; load "
                                   "it with POST /admin/versions first")
            if slot.weight > 0 or slot.state != "ready":
                what = f"has traffic weight {slot.weight}" if slot.weight else f"is {slot.state}"
                raise AdminConflict(f"version {plan.version!r} {what}; a shadow answers no "
                                    "client, so it needs a ready version with weight 0")
            samples = self._sink if isinstance(self._sink, SampleSink) else None
            if samples is None and self._open_samples is not None:
                samples = self._open_samples()
            self.shadow = Shadow(self.name, plan, slot, self._shadow_limits, self.metrics,
                                 samples)
            self.metrics.set_mirror(plan.version, plan.mirror_percent / 100)
            log.info("shadow: mirroring %g%% of requests to version %s", plan.mirror_percent,
                     plan.version)
        return self.shadow_state()

    async def stop_shadow(self) -> dict[str, Any]:
        """End the shadow (the version stays loaded); its last state, or none."""
        async with self._admin_lock:
            final = self.shadow_state()
            if self.shadow is not None:
                self._end_shadow("it was ended by the admin API")
        return final

    def shadow_state(self, samples: int = 20) -> dict[str, Any]:
        shadow = self.shadow
        return {"model_name": self.name,
                "shadow": shadow.state(samples) if shadow is not None else None}

    def _end_shadow(self, why: str) -> None:
        shadow = self.shadow
        if shadow is None:
            return
        self.shadow = None
        shadow.close()
        self.metrics.set_mirror(shadow.plan.version, 0.0)
        log.info("shadow of version %s ended: %s", shadow.plan.version, why)

    def close(self) -> None:
        """Stop every version's predict thread and remove its downloaded files."""
        self._end_shadow("the server stops")
        for slot in self.registry.slots:
            slot.batcher.close()
            slot.model.close()

