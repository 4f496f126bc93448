"""The streaming scorer's loop: read what waits -> check -> predict as one batch -> write
predictions and dead letters and acknowledge, all in one MULTI/EXEC.

Delivery is at-least-once. An entry is acknowledged only in the transaction that writes its
prediction (or its dead letter), so a scorer that dies at any point before EXEC leaves its
entries pending, and one that dies after it has written them all. Pending entries of a dead
scorer are claimed (XAUTOCLAIM) by any scorer of the group once they have been idle for
``min_idle_ms``; a restarted scorer (same consumer name) first finishes its own. An entry
delivered more than ``max_deliveries`` times is dead-lettered instead of scored again, so
one that crashes every scorer cannot stop the stream. Duplicates are possible (a batch that
takes longer than ``min_idle_ms`` is claimed and scored again): each output carries the
request's entry id (``input_id``) to de-duplicate on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import redis
from threadpoolctl import threadpool_limits

from ctcd.batch.chunk import predict_isolating
from ctcd.batch.model import ModelRef, ScoringModel
from ctcd.batch.rows import check_rows
from ctcd.data.spec import DatasetSpec
from ctcd.streaming import messages
from ctcd.streaming.group import Entry, Group, entries
from ctcd.streaming.messages import BadMessage, Fields, Request
from ctcd.streaming.settings import ScorerSettings, heartbeat_key

log = logging.getLogger("ctcd.streaming")

Loader = Callable[[str, str], ScoringModel]  # (name, version) -> loaded model
Resolver = Callable[[ModelRef], str]  # reference -> version it names now

READY_LINE = "ctcd streaming scorer ready: {consumer} in group {group} on {stream}"


@dataclass
class Counters:
    scored: int = 0
    dead_lettered: int = 0
    batches: int = 0
    claimed: int = 0
    errors: int = 0
    started_at: str = field(default_factory=lambda: _now())


class Scorer:
    """One consumer of a group. ``run`` until SIGTERM/SIGINT (or ``stop``); SIGHUP checks
    the model alias at once."""

    def __init__(
        self,
        settings: ScorerSettings,
        client: redis.Redis,
        *,
        resolve: Resolver,
        load: Loader,
        spec: DatasetSpec | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.ref = ModelRef.parse(settings.model_uri)
        self.spec = spec
        self._resolve, self._load = resolve, load
        self.model: ScoringModel | None = None
        self.counters = Counters()
        self.stopping = False
        self._reload_now = False
        self._next_check = 0.0
        self._loading: Future[ScoringModel | None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self.group = Group(settings, client)
        self._next_beat = 0.0
        self._key = heartbeat_key(settings.stream, settings.group, settings.consumer)
        self.ready = False  # the model is loaded and the stream is read (``/readyz``)
        self.last_turn = time.monotonic()  # the loop's last turn (``/healthz``)

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model, create the group if needed, finish this consumer's own pending
        entries; then ``serve``."""
        version = self._resolve(self.ref)
        self.model = self._load(self.ref.name, version)
        self.model.schema  # noqa: B018 - refuse a model without a column signature now
        self._next_check = time.monotonic() + self.settings.reload_interval
        self.group.ensure()
        log.info("scoring %s with %s version %s", self.settings.stream, self.ref.name, version)
        self._beat(force=True)
        self._recover_own()
        self.ready = True

    def serve(self) -> None:
        backoff = 0.5
        while not self.stopping:
            self.last_turn = time.monotonic()
            try:
                self.step()
                backoff = 0.5
            except (redis.ConnectionError, redis.TimeoutError) as err:
                self.counters.errors += 1
                log.warning("redis unavailable (%s); retrying in %.1fs", err, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except redis.ResponseError as err:
                if "NOGROUP" not in str(err):
                    raise
                log.warning("consumer group %s is gone; creating it again", self.settings.group)
                self.group.ensure()

    def step(self) -> int:
        """One turn: swap in a newly loaded model, renew the heartbeat, score claimed or new
        entries. Returns how many entries were handled."""
        self._maybe_swap()
        self._beat()
        if self.group.claim_due():
            claimed = self.group.claim()
            self.counters.claimed = self.group.claimed
            if claimed:
                return self.handle(claimed, recheck=True)
        s = self.settings
        reply = self.redis.xreadgroup(s.group, s.consumer, {s.stream: ">"}, count=s.batch_size,
                                      block=s.block_ms)
        found = entries(reply)
        return self.handle(found, recheck=False) if found else 0

    def close(self) -> None:
        """Stop loading, drop the heartbeat, and leave the group if this consumer holds
        nothing (consumers named after pods would otherwise pile up in the group)."""
        self.ready = False
        self._pool.shutdown(wait=False, cancel_futures=True)
        s = self.settings
        with contextlib.suppress(redis.RedisError):  # the key expires by itself anyway
            self.redis.delete(self._key)
            if not self.group.leave_if_idle(s.consumer):
                log.info("%s still holds pending entries; it stays in group %s for a "
                         "restart or another consumer to finish them", s.consumer, s.group)

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def reload(self, *_: Any) -> None:
        self._reload_now = True

    # -- one batch ----------------------------------------------------------------------------

    def handle(self, entries: Sequence[Entry], *, recheck: bool) -> int:
        """Score ``entries`` and write their outcomes; acknowledge what was written.

        ``recheck``: the entries were delivered before (claimed or re-read), so their
        delivery counts are checked against ``max_deliveries`` first.
        """
        model, s = self._model(), self.settings
        schema = model.schema
        deliveries = self.group.deliveries([i for i, _ in entries]) if recheck else {}
        dead: list[tuple[str, Fields | None, str]] = []
        gone: list[str] = []
        requests: list[Request] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending: nothing to score
                gone.append(entry_id)
                continue
            count = deliveries.get(entry_id, 1)
            if count > s.max_deliveries:
                dead.append((entry_id, fields, f"delivered {count} times without being "
                             f"acknowledged (max_deliveries={s.max_deliveries}): each scorer "
                             "that took it failed or died while scoring it"))
                continue
            try:
                requests.append(messages.decode(entry_id, fields, schema))
            except BadMessage as err:
                dead.append((entry_id, fields, err.reason))
        by_id = dict(entries)
        scored: list[tuple[Request, Any]] = []
        if requests:
            checked = check_rows(schema, messages.columns(requests, schema), len(requests),
                                 spec=self.spec, where=f"{messages.DATA}.")
            for i, reason in checked.rejects.items():
                dead.append((requests[i].entry_id, by_id[requests[i].entry_id], reason))
            if checked.table is not None:
                try:
                    columns, refused = predict_isolating(model, checked.table)
                except Exception:
                    # Not the requests' fault (the model or this process): leave them
                    # pending; they are claimed again after min_idle_ms, and dead-lettered
                    # once they have failed max_deliveries times.
                    self.counters.errors += 1
                    log.exception("predict failed on %d requests; leaving them pending",
                                  checked.table.rows)
                    self._write([], dead, gone)
                    return len(dead) + len(gone)
                keep = [int(k) for k in checked.kept]
                for i, reason in refused.items():
                    request = requests[keep[i]]
                    dead.append((request.entry_id, by_id[request.entry_id], reason))
                accepted = [k for j, k in enumerate(keep) if j not in refused]
                scored = list(zip((requests[k] for k in accepted), _values(columns),
                                  strict=True))
        self._write(scored, dead, gone, deliveries)
        self.counters.batches += 1
        return len(entries)

    def _model(self) -> ScoringModel:
        if self.model is None:
            raise RuntimeError("the scorer scores only after start() has loaded its model")
        return self.model

    def _write(self, scored: Sequence[tuple[Request, Any]],
               dead: Sequence[tuple[str, Fields | None, str]], gone: Sequence[str],
               deliveries: dict[str, int] | None = None) -> None:
        """Outputs, dead letters and the acknowledgement of them all, in one transaction."""
        s, model, now = self.settings, self._model(), _now()
        pipe = self.redis.pipeline(transaction=True)
        for request, value in scored:
            out: dict[Any, Any] = {
                "input_id": request.entry_id, "prediction": orjson.dumps(value),
                "model_name": model.name, "model_version": model.version,
                "consumer": s.consumer, "scored_at": now,
            }
            if request.key is not None:
                out["key"] = request.key
            pipe.xadd(s.outputs, out, maxlen=s.output_maxlen, approximate=True)
        for entry_id, fields, reason in dead:
            letter: dict[Any, Any] = {
                "input_id": entry_id, "reason": reason, "fields": messages.fields_json(fields),
                "deliveries": str((deliveries or {}).get(entry_id, 1)),
                "model_name": model.name, "model_version": model.version,
                "consumer": s.consumer, "at": now,
            }
            pipe.xadd(s.dead_letters, letter, maxlen=s.output_maxlen, approximate=True)
        done = [r.entry_id for r, _ in scored] + [d[0] for d in dead] + list(gone)
        if done:
            pipe.xack(s.stream, s.group, *done)
        pipe.execute()
        self.counters.scored += len(scored)
        self.counters.dead_lettered += len(dead)
        for _, _, reason in dead:
            log.info("dead-lettered a request: %s", reason)

    # -- recovery ------------------------------------------------------------------------------

    def _recover_own(self) -> None:
        """Score this consumer's own pending entries (left by its previous run) first."""
        last = "0"
        while not self.stopping:
            found = self.group.own_pending(last)
            if not found:
                return
            log.info("re-scoring %d entries this consumer left pending", len(found))
            self.handle(found, recheck=True)
            last = found[-1][0]

    # -- model versions -------------------------------------------------------------------------

    def _maybe_swap(self) -> None:
        """Start a background check of the alias when due; swap in a model it loaded."""
        if self._loading is not None and self._loading.done():
            future, self._loading = self._loading, None
            try:
                loaded = future.result()
            except Exception as err:  # any load failure keeps the current version serving
                log.error("could not load the new version of %s (%s); still scoring with "
                          "version %s", self.ref, err, self.model.version if self.model else "-")
                loaded = None
            if loaded is not None:
                old = self.model.version if self.model else "-"
                self.model = loaded
                log.info("now scoring with %s version %s (was %s)", loaded.name, loaded.version,
                         old)
                self._beat(force=True)
        if self.ref.alias is None or self._loading is not None:
            return
        due = self.settings.reload_interval > 0 and time.monotonic() >= self._next_check
        if due or self._reload_now:
            self._reload_now = False
            self._next_check = time.monotonic() + self.settings.reload_interval
            self._loading = self._pool.submit(self._newer)

    def _newer(self) -> ScoringModel | None:
        version = self._resolve(self.ref)
        current = self.model.version if self.model else None
        if version == current:
            return None
        log.info("%s now names version %s; loading it", self.ref, version)
        model = self._load(self.ref.name, version)
        model.schema  # noqa: B018 - must have a column signature too
        return model

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s, model = self.settings, self.model
        return {
            "consumer": s.consumer, "group": s.group, "stream": s.stream,
            "output_stream": s.outputs, "dead_letter_stream": s.dead_letters,
            "pid": os.getpid(), "host": socket.gethostname(), "model_uri": self.ref.uri,
            "model_name": model.name if model else self.ref.name,
            "model_version": model.version if model else None,
            "last_seen": _now(), **self.counters.__dict__,
        }

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        ttl = self.settings.heartbeat_ttl
        self._next_beat = now + min(1.0, ttl / 3)
        self.redis.set(self._key, json.dumps(self.status()), px=int(ttl * 1000))


def run(settings: ScorerSettings, *, resolve: Resolver, load: Loader,
        spec: DatasetSpec | None = None) -> int:
    """Run a scorer until SIGTERM/SIGINT; print READY_LINE once it reads the stream."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.block_ms / 1000
                                  + 30, socket_connect_timeout=10, health_check_interval=30)
    scorer = Scorer(settings, client, resolve=resolve, load=load, spec=spec)
    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGTERM, scorer.stop), (signal.SIGINT, scorer.stop),
        (signal.SIGHUP, scorer.reload))}
    limits = threadpool_limits(limits=settings.threads)
    probes = None
    if settings.health_port is not None:
        from ctcd.streaming.health import serve

        probes = serve(scorer, settings.stall_seconds, settings.health_host,
                       settings.health_port, token=settings.reload_token)
    try:
        scorer.start()
        print(READY_LINE.format(consumer=settings.consumer, group=settings.group,
                                stream=settings.stream), flush=True)
        scorer.serve()
    finally:
        if probes is not None:
            probes.shutdown()
        limits.restore_original_limits()
        scorer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        client.close()
    log.info("stopped after scoring %d and dead-lettering %d requests",
             scorer.counters.scored, scorer.counters.dead_lettered)
    return 0


def _values(columns: dict[str, np.ndarray]) -> list[Any]:
    """Prediction columns -> one JSON-able value per row (an object for several columns)."""
    lists = {name: values.tolist() for name, values in columns.items()}
    if list(lists) == ["prediction"]:
        return lists["prediction"]
    names = list(lists)
    return [dict(zip(names, row, strict=True)) for row in zip(*lists.values(), strict=True)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
