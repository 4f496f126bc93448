"""The versions one server holds, their traffic weights, and per-version counters.

Routing reads one immutable tuple (cumulative weights, slots) that admin calls replace
as a whole, so a request always sees either the old split or the new one, never a mix.
A request keeps the slot it picked until it answers, so unloading a version (allowed
only at weight 0) never cuts a request short.
"""

from __future__ import annotations

import bisect
import collections
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ctcd.serving.batching import Batcher
from ctcd.serving.errors import AdminConflict, InvalidInput, ModelNotFound, ModelNotReady
from ctcd.serving.model import LoadedModel

WEIGHT_TOLERANCE = 1e-6


@dataclass
class VersionSlot:
    version: str
    model: LoadedModel
    batcher: Batcher
    weight: float = 0.0
    state: str = "ready"
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    requests: int = 0
    errors: int = 0
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )

    @property
    def model_uri(self) -> str:
        return self.model.uri

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self.latencies.append(seconds)

    def entry(self) -> dict[str, Any]:
        p50 = p99 = None
        if self.latencies:
            p50, p99 = (float(v) * 1000 for v in np.percentile(list(self.latencies), [50, 99]))
        return {
            "version": self.version,
            "model_uri": self.model_uri,
            "weight": self.weight,
            "state": self.state,
            "loaded_at": self.loaded_at.isoformat(),
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms_p50": p50,
            "latency_ms_p99": p99,
            **self.model.compiled_view(),
        }


class ModelRegistry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._slots: dict[str, VersionSlot] = {}
        self._routes: tuple[list[float], list[VersionSlot]] = ([], [])

    @property
    def slots(self) -> list[VersionSlot]:
        return list(self._slots.values())

    def ready(self) -> bool:
        return bool(self._routes[1])

    def pick(self) -> VersionSlot:
        """A version for one request, chosen by traffic weight."""
        cumulative, slots = self._routes
        if not slots:
            raise ModelNotReady(self.name)
        if len(slots) == 1:
            return slots[0]
        index = bisect.bisect_right(cumulative, random.random() * cumulative[-1])
        return slots[min(index, len(slots) - 1)]

    def get(self, version: str) -> VersionSlot:
        try:
            return self._slots[version]
        except KeyError:
            raise ModelNotFound(self.name, version) from None

    def find(self, version: str) -> VersionSlot | None:
        return self._slots.get(version)

    def add(self, slot: VersionSlot) -> None:
        if slot.version in self._slots:
            raise AdminConflict(f"version {slot.version!r} is already loaded")
        self._slots[slot.version] = slot
        self._reroute()

    def remove(self, version: str) -> VersionSlot:
        slot = self.get(version)
        if slot.weight > 0:
            raise AdminConflict(
                f"version {version!r} has traffic weight {slot.weight}; move its traffic "
                "with PUT /admin/traffic before unloading it"
            )
        del self._slots[version]
        self._reroute()
        return slot

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Validate a whole split, then apply it at once; on any problem nothing changes."""
        if not isinstance(weights, Mapping) or not weights:
            raise InvalidInput("weights", "must be a non-empty object {version: weight}")
        clean: dict[str, float] = {}
        for version, weight in weights.items():
            field_name = f"weights.{version}"
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise InvalidInput(field_name, f"must be a number, got {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise InvalidInput(field_name, f"must be a finite number >= 0, got {weight!r}")
            slot = self._slots.get(version)
            if slot is None:
                raise InvalidInput(field_name, f"version {version!r} is not loaded; load it "
                                   "with POST /admin/versions first")
            if slot.state != "ready" and weight > 0:
                raise InvalidInput(field_name, f"version {version!r} is {slot.state}")
            clean[version] = float(weight)
        total = sum(clean.values())
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise InvalidInput("weights", f"must sum to 1, they sum to {total}")
        for slot in self._slots.values():
            slot.weight = clean.get(slot.version, 0.0)
        self._reroute()

    def _reroute(self) -> None:
        live = [s for s in self._slots.values() if s.weight > 0 and s.state == "ready"]
        cumulative: list[float] = []
        total = 0.0
        for slot in live:
            total += slot.weight
            cumulative.append(total)
        self._routes = (cumulative, live)

    def describe(self) -> dict[str, Any]:
        return {"model_name": self.name, "versions": [s.entry() for s in self._slots.values()]}
