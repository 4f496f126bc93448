"""Prometheus metrics of one server, per model version (``GET /metrics``).

With ``--workers N`` every worker writes its metrics to files in the shared directory
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set by the supervisor)
and a scrape that reaches any worker answers the sum over all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DIFFERENCE_BUCKETS = (0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.model_name = model_name
        self.registry = registry or CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._children: dict[tuple[str, str, int], tuple[Any, ...]] = {}
        self._batch_children: dict[str, tuple[Any, Any]] = {}
        labels = ("model", "version", "protocol")
        self.requests = Counter(
            "ctcd_model_requests", "Prediction requests answered, by HTTP status.",
            (*labels, "status"), registry=self.registry)
        self.errors = Counter(
            "ctcd_model_request_errors", "Prediction requests answered with a 4xx or 5xx.",
            (*labels, "status"), registry=self.registry)
        self.latency = Histogram(
            "ctcd_model_request_duration_seconds", "Time from request to response.",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rows = Counter(
            "ctcd_model_rows_scored", "Rows scored successfully.", ("model", "version"),
            registry=self.registry)
        self.batch_rows = Histogram(
            "ctcd_model_batch_rows", "Rows per predict call (after batching).",
            ("model", "version"), buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(
            "ctcd_model_batch_requests", "Requests merged into one predict call.",
            ("model", "version"), buckets=BATCH_BUCKETS, registry=self.registry)
        self.weight = Gauge(
            "ctcd_model_version_weight", "Traffic weight of each loaded version.",
            ("model", "version"), registry=self.registry, multiprocess_mode="mostrecent")
        self._shadow_children: dict[tuple[str, str], Any] = {}
        shadow = ("model", "version")  # the shadow version
        self.shadow_requests = Counter(
            "ctcd_shadow_requests", "Copies of live requests for the shadow version, by "
            "outcome: mirrored (queued), dropped (the queue was full), answered, errors, "
            "timeouts.", (*shadow, "outcome"), registry=self.registry)
        self.shadow_rows = Counter(
            "ctcd_shadow_rows", "Rows the shadow version answered, compared with the live "
            "answer: kind label (equal or not) or number (within the tolerance or not).",
            (*shadow, "kind", "result"), registry=self.registry)
        self.shadow_difference = Histogram(
            "ctcd_shadow_abs_difference", "Absolute difference between the shadow's and "
            "the live numeric answer of a row (the largest of the row's values).", shadow,
            buckets=DIFFERENCE_BUCKETS, registry=self.registry)
        self.shadow_latency = Histogram(
            "ctcd_shadow_latency_seconds", "Latency of each version on the same mirrored "
            "requests: role live (the request, checked, scored, encoded) or shadow (its merged "
            "predict call).",
            (*shadow, "role"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shadow_mirror = Gauge(
            "ctcd_shadow_mirror_ratio", "Share of live requests mirrored to the shadow "
            "version (0 once it ends).", shadow, registry=self.registry,
            multiprocess_mode="mostrecent")

    def observe_request(self, version: str, protocol: str, status: int, seconds: float,
                        rows: int) -> None:
        key = (version, protocol, status)
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the increments; do them once
            labels = (self.model_name, version, protocol)
            children = (self.requests.labels(*labels, str(status)),
                        self.latency.labels(*labels),
                        self.errors.labels(*labels, str(status)) if status >= 400 else None,
                        self.rows.labels(self.model_name, version))
            self._children[key] = children
        requests, latency, errors, scored = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()
        elif rows:
            scored.inc(rows)

    def observe_batch(self, version: str, requests: int, rows: int) -> None:
        children = self._batch_children.get(version)
        if children is None:
            children = (self.batch_rows.labels(self.model_name, version),
                        self.batch_requests.labels(self.model_name, version))
            self._batch_children[version] = children
        children[0].observe(rows)
        children[1].observe(requests)

    def set_weights(self, weights: dict[str, float], removed: tuple[str, ...] = ()) -> None:
        for version, weight in weights.items():
            self.weight.labels(self.model_name, version).set(weight)
        for version in removed:
            if self.multiprocess:  # the value stays in the shared files: make it 0 there
                self.weight.labels(self.model_name, version).set(0)
            self.weight.remove(self.model_name, version)
            self._children = {k: v for k, v in self._children.items() if k[0] != version}
            self._batch_children.pop(version, None)

    # -- shadow (called from its predict thread; prometheus_client is thread-safe) ------------
    def _shadow(self, key: str, version: str, *labels: str) -> Any:
        found = self._shadow_children.get((key, version + "/" + "/".join(labels)))
        if found is None:
            metric = {"requests": self.shadow_requests, "rows": self.shadow_rows,
                      "difference": self.shadow_difference,
                      "latency": self.shadow_latency}[key]
            found = metric.labels(self.model_name, version, *labels)
            self._shadow_children[key, version + "/" + "/".join(labels)] = found
        return found

    def observe_shadow(self, version: str, outcome: str, count: int = 1) -> None:
        self._shadow("requests", version, outcome).inc(count)

    def observe_comparison(self, version: str, labels: tuple[int, int],
                           numbers: tuple[int, int], differences: Any, live_s: float,
                           shadow_s: float) -> None:
        for kind, (rows, same) in (("label", labels), ("number", numbers)):
            if rows:
                self._shadow("rows", version, kind, "agree").inc(same)
                if rows > same:
                    self._shadow("rows", version, kind, "disagree").inc(rows - same)
        if len(differences):
            histogram = self._shadow("difference", version)
            for value in differences.tolist():
                histogram.observe(value)
        self._shadow("latency", version, "live").observe(live_s)
        self._shadow("latency", version, "shadow").observe(shadow_s)

    def set_mirror(self, version: str, share: float) -> None:
        self.shadow_mirror.labels(self.model_name, version).set(share)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # every worker's files, summed
        return generate_latest(registry)
