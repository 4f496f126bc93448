"""Shadow traffic: a share of live requests copied to a candidate version loaded beside the
live one, its answers compared with the live answers and never returned.

The live request is answered first and is not touched again: :meth:`Shadow.offer` only
queues a copy (the checked input, the live output and latency, the correlation id) in a
bounded queue; when the queue is full the copy is dropped and counted. One dispatcher on
the event loop hands everything queued to the shadow's own predict thread as merged calls
(:func:`ctcd.serving.batching.predict_each`), one at a time; that thread compares the
answers with the live ones and records the outcome. A shadow that raises is counted as an
error; one that has not answered after ``timeout_ms`` as a timeout (its late answer is not
counted), and while that call runs on, the copies queued behind it are counted as timeouts
every ``timeout_ms`` (the queue stays bounded: copies beyond it are dropped). The predict
thread is a daemon thread: a model that never returns cannot keep the server from stopping.

What is recorded (:mod:`ctcd.serving.comparison`), per window of ``window_seconds`` and
for the whole shadow: copies mirrored and dropped, answers, errors and timeouts,
agreement of labels, absolute differences of numbers, both latencies on the same requests,
and a uniform sample (reservoir) of disagreeing and failing requests, inputs and both
answers, also written to the request log (table ``shadow_samples``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ctcd.serving.batching import predict_each
from ctcd.serving.comparison import Counts, Outcome, compare
from ctcd.serving.errors import InvalidInput, ServingError
from ctcd.serving.protocols import ScoringRequest, jsonable
from ctcd.serving.registry import VersionSlot

log = logging.getLogger(__name__)
# how long the dispatcher lets copies gather before a call: one merged predict for many costs
# the live path's CPU far less than one each (a copy's answer is awaited by no client)
COLLECT_SECONDS = 0.05


@dataclass(frozen=True)
class ShadowPlan:
    """What the admin API asks: which loaded version, how much of the traffic, and how
    its answers are judged equal (``tolerance``, the absolute difference allowed)."""

    version: str
    mirror_percent: float
    timeout_ms: float = 1000.0
    tolerance: float = 1e-6
    window_seconds: float = 60.0

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> ShadowPlan:
        """The admin API's body, each field checked (InvalidInput naming it)."""
        fields = {"version", *_RANGES}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise InvalidInput(unknown[0], f"is not a field; send {{{', '.join(sorted(fields))}}}")
        version = doc.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not version:
            raise InvalidInput("version", "must be the non-empty name of a loaded version")
        if "mirror_percent" not in doc:
            raise InvalidInput("mirror_percent", "is required: the share of live requests "
                               "to copy, above 0 and at most 100")
        values: dict[str, float] = {}
        for name, (fits, what) in _RANGES.items():
            if name not in doc:
                continue
            value = doc[name]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not fits(value)):
                raise InvalidInput(name, f"must be {what}, got {value!r}")
            values[name] = float(value)
        return cls(version=version, **values)


_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "mirror_percent": (lambda v: 0 < v <= 100, "a number above 0 and at most 100"),
    "timeout_ms": (lambda v: 0 < v <= 600_000, "a number of milliseconds above 0 (at most "
                   "600000)"),
    "tolerance": (lambda v: v >= 0, "a number >= 0"),
    "window_seconds": (lambda v: 0 < v <= 86_400, "a number of seconds above 0 (at most "
                       "86400)"),
}


@dataclass(frozen=True)
class ShadowLimits:
    """The server's bounds (its settings): queued copies, kept samples, closed windows."""

    max_queue: int = 1000
    samples: int = 100
    windows: int = 10
    max_rows: int = 4096
    threads: int = 1


@runtime_checkable
class SampleSink(Protocol):
    def offer_sample(self, session: str, slot: int, sample: dict[str, Any]) -> None: ...


class ShadowObserver(Protocol):
    """Where the outcomes are counted too (Prometheus, :class:`ServerMetrics`)."""

    def observe_shadow(self, version: str, outcome: str, count: int = 1) -> None: ...

    def observe_comparison(self, version: str, labels: tuple[int, int],
                           numbers: tuple[int, int], differences: np.ndarray,
                           live_s: float, shadow_s: float) -> None: ...


class Mirrored:
    """A copy of one answered live request."""

    __slots__ = ("live_output", "live_s", "live_version", "queued", "request", "request_id")

    def __init__(self, request: ScoringRequest, request_id: str, live_version: str,
                 live_output: Any, live_s: float) -> None:
        self.request, self.request_id, self.live_version = request, request_id, live_version
        self.live_output, self.live_s = live_output, live_s
        self.queued = time.perf_counter()


class Shadow:
    def __init__(self, model_name: str, plan: ShadowPlan, slot: VersionSlot,
                 limits: ShadowLimits, observer: ShadowObserver,
                 samples: SampleSink | None = None) -> None:
        self.model_name, self.plan, self.slot, self.limits = model_name, plan, slot, limits
        self.started_at = datetime.now(UTC)
        self.session = f"{model_name}/{plan.version}/{self.started_at.isoformat()}/{os.getpid()}"
        self._share = plan.mirror_percent / 100.0
        self._observer, self._samples_log = observer, samples
        self._pending: collections.deque[Mirrored] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = threading.Lock()
        self._total = Counts()
        self._windows: dict[int, Counts] = {}
        self._live_versions: set[str] = set()
        self._samples: list[dict[str, Any]] = []
        self._failed_seen = 0  # disagreeing or failed requests offered to the reservoir
        self._worker = _Worker(f"shadow-{plan.version}", limits.threads)
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    # -- the live path: queue a copy, nothing else ----------------------------------------
    def offer(self, request: ScoringRequest, request_id: str, live_version: str,
              live_output: Any, live_s: float) -> None:
        if self._share < 1.0 and random.random() >= self._share:
            return
        if len(self._pending) >= self.limits.max_queue:
            self._count("dropped")
            return
        self._pending.append(Mirrored(request, request_id, live_version, live_output, live_s))
        self._count("mirrored")
        self._wake.set()

    def _count(self, outcome: str, count: int = 1) -> None:
        with self._lock:
            for counts in self._current():
                setattr(counts, outcome, getattr(counts, outcome) + count)
        self._observer.observe_shadow(self.plan.version, outcome, count)

    def _current(self) -> tuple[Counts, Counts]:
        """The whole shadow's counts and the current window's (call with the lock held)."""
        index = int(time.time() // self.plan.window_seconds)
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = Counts()
            for old in sorted(self._windows)[:-self.limits.windows - 1]:
                del self._windows[old]
        return self._total, window

    # -- the dispatcher (event loop) and the predict thread ----------------------------------
    async def _dispatch(self) -> None:
        timeout = self.plan.timeout_ms / 1000.0
        while True:
            await self._wake.wait()
            await asyncio.sleep(COLLECT_SECONDS)  # copies wait for nobody: merge more of them
            self._wake.clear()
            while self._pending:
                batch = self._take()
                job = _Job(batch)
                future = self._worker.submit(partial(self._run, job))
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    self._expire(job)
                    await self._while_stuck(future, timeout)
                except Exception:  # a defect here must not stop the shadow's bookkeeping
                    log.exception("shadow %s: comparing a batch failed", self.plan.version)

    async def _while_stuck(self, future: asyncio.Future[Any], timeout: float) -> None:
        """One call at a time, even a late one; while it runs on, the copies queued behind
        it cannot be answered in time: each ``timeout`` they are counted as timeouts, so a
        hanging shadow shows as failing at once (not as a slowly filling queue)."""
        while not future.done():
            await asyncio.wait([future], timeout=timeout)
            if not future.done() and self._pending:
                stuck = list(self._pending)
                self._pending.clear()
                self._expire(_Job(stuck))

    def _take(self) -> list[Mirrored]:
        batch = [self._pending.popleft()]
        rows = batch[0].request.rows
        while self._pending and rows + self._pending[0].request.rows <= self.limits.max_rows:
            item = self._pending.popleft()
            rows += item.request.rows
            batch.append(item)
        return batch

    def _expire(self, job: _Job) -> None:
        with self._lock:
            if job.state != "running":
                return
            job.state = "late"
        self._count("timeouts", len(job.items))
        for item in job.items:
            self._sample(item, "timeout", None, error=f"no answer within "
                         f"{self.plan.timeout_ms:g} ms")

    def _run(self, job: _Job) -> None:
        """In the predict thread: score the batch, compare, record (unless it came late)."""
        items = job.items
        started = time.perf_counter()
        answers = predict_each(self.slot.model, [i.request for i in items])
        done = time.perf_counter()
        took = done - started
        task = self.slot.model.task
        outcomes = [None if isinstance(a, BaseException) else
                    compare(i.live_output, a, i.request.rows, task, self.plan.tolerance)
                    for i, a in zip(items, answers, strict=True)]
        with self._lock:
            if job.state == "late":
                return
            job.state = "done"
            for counts in self._current():
                for item, outcome in zip(items, outcomes, strict=True):
                    _record(counts, item, outcome, took)
            self._live_versions.update(i.live_version for i in items)
        for item, answer, outcome in zip(items, answers, outcomes, strict=True):
            if outcome is None:
                self._observer.observe_shadow(self.plan.version, "errors")
                self._sample(item, "error", None, error=_error_text(answer))
                continue
            self._observer.observe_shadow(self.plan.version, "answered")
            self._observer.observe_comparison(
                self.plan.version, (outcome.label_rows, outcome.label_agreed),
                (outcome.differences.size, outcome.within), outcome.differences,
                item.live_s, took)
            if outcome.disagrees:
                self._sample(item, "disagreement", answer, difference=outcome.max_difference)

    def _sample(self, item: Mirrored, kind: str, answer: Any, *, error: str | None = None,
                difference: float | None = None) -> None:
        """Keep a uniform sample of at most ``limits.samples`` (reservoir sampling)."""
        with self._lock:
            self._failed_seen += 1
            seen = self._failed_seen
            slot = (seen - 1 if seen <= self.limits.samples
                    else random.randrange(seen))
            if slot >= self.limits.samples:
                return
        sample = {
            "request_id": item.request_id, "ts": datetime.now(UTC).isoformat(),
            "model_name": self.model_name, "kind": kind, "live_version": item.live_version,
            "shadow_version": self.plan.version, "rows": item.request.rows,
            "inputs": item.request, "live": jsonable(item.live_output),
            "shadow": None if answer is None else jsonable(answer),
            "max_abs_difference": difference, "error": error,
        }
        with self._lock:
            if slot < len(self._samples):
                self._samples[slot] = sample
            else:
                self._samples.append(sample)
        if self._samples_log is not None:
            self._samples_log.offer_sample(self.session, slot, sample)

    # -- reading and ending ------------------------------------------------------------------
    def state(self, samples: int = 20) -> dict[str, Any]:
        """The plan, the comparison (whole and per window, oldest first) and samples."""
        from ctcd.serving.reqlog import sample_json

        with self._lock:
            total = self._total.to_dict()
            windows = [{"start": _iso(i * self.plan.window_seconds),
                        "end": _iso((i + 1) * self.plan.window_seconds), **counts.to_dict()}
                       for i, counts in sorted(self._windows.items())]
            kept = list(self._samples[:samples])
            live = sorted(self._live_versions)
        return {"version": self.plan.version, "mirror_percent": self.plan.mirror_percent,
                "timeout_ms": self.plan.timeout_ms, "tolerance": self.plan.tolerance,
                "window_seconds": self.plan.window_seconds,
                "started_at": self.started_at.isoformat(), "live_versions": live,
                "queued": len(self._pending), "max_queue": self.limits.max_queue,
                "cumulative": total, "windows": windows,
                "samples": [sample_json(s) for s in kept]}

    def close(self) -> None:
        """Stop mirroring; a predict call still running is abandoned (its thread ends with
        its call, or with the process)."""
        self._task.cancel()
        self._pending.clear()
        self._worker.close()


class _Job:
    __slots__ = ("items", "state")

    def __init__(self, items: list[Mirrored]) -> None:
        self.items = items
        self.state = "running"  # -> "done", or "late" when it timed out first


def _record(counts: Counts, item: Mirrored, outcome: Outcome | None, took: float) -> None:
    if outcome is None:
        counts.errors += 1
        return
    counts.answered += 1
    counts.label_rows += outcome.label_rows
    counts.label_agreed += outcome.label_agreed
    counts.number_rows += int(outcome.differences.size)
    counts.number_within += outcome.within
    counts.disagreeing += outcome.disagrees
    if outcome.differences.size:
        counts.difference.add(outcome.differences)
    counts.live_latency.add_one(item.live_s)
    counts.shadow_latency.add_one(took)


def _error_text(error: BaseException) -> str:
    if isinstance(error, ServingError):
        return error.message
    return f"{type(error).__name__}: {error}"[:500]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class _Worker:
    """One daemon thread running calls in order (a call that never returns leaves it
    behind without keeping the process alive)."""

    def __init__(self, name: str, threads: int) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = threads
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.put((fn, loop, future))
        return future

    def close(self) -> None:
        self._calls.put(None)

    def _loop(self) -> None:
        if self._threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=self._threads)
        while (call := self._calls.get()) is not None:
            fn, loop, future = call
            try:
                result, error = fn(), None
            except BaseException as err:  # delivered to the awaiting coroutine
                result, error = None, err
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: the server stopped
                return


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
