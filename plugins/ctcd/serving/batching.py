"""Adaptive batching: concurrent requests to one model version share one predict call.

There is no fixed timer by default. A lone request (nothing else in flight on this
version) is scored at once, a batch of one with no added latency. (Scoring it on the event
loop itself, to save two thread wake-ups, was tried and dropped: under load the loop sees
one parsed request at a time, so every request looked lone and they were scored one by
one.) Under load the batcher
sizes batches by the concurrency it sees: it counts the requests in flight (received,
not yet answered), and when fewer than that many are queued as the model becomes free, it
waits for the rest while they keep arriving (at most one predict's time, and never once
arrivals pause for ``ARRIVAL_GAP_S`` or half a predict's time, whichever is longer: a
client's turnaround, longer over gRPC than HTTP, is not a pause). A predict's fixed cost
(a 100-tree forest spends about as long on 1 row as on 30) is then paid once per wave of
clients instead of once per half of them, which is where closed-loop traffic settles
without the wait: two cohorts alternating, each half the size. Batches never exceed
``max_rows``. ``max_wait_ms`` > 0 instead holds every batch open that long (a fixed
timer).

Requests that name their outputs (V2 ``outputs``, e.g. ``predict_proba``) join the same
queue: a batch makes one call per output any of its requests asked for, each on the whole
merged batch (one ``predict_proba`` call however many requests want it, one ``predict``
call for the rest). One queue, rather than one per output kind, keeps the concurrency
count above whole (a queue per kind would wait for requests that sit in the other one)
and merges the input once; a mixed batch pays the two model calls that two queues would.

A batch is predicted in the version's predict thread, except when the model has been
measured to predict a batch that large in under ``INLINE_S`` (a compiled forest answers 32
rows in tens of microseconds): then it is predicted on the event loop itself. Handing such
a batch to the thread and its answer back costs more than the predict (a queue put, a
wake-up of the thread, the GIL passed both ways and the loop woken through its self-pipe),
and under load the loop, busy with other requests, held the GIL the thread waited for:
the more clients, the longer each batch waited (a compiled forest answered fewer requests
at c=32 than at c=8). The size below which a batch is fast is learnt from the batches
timed in the thread and kept honest by every inline one (a slower one lowers it).

Each caller gets back its own rows of each output it asked for, in order. If a merged
batch fails with a client-side error, its requests are retried one by one so one bad
request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from ctcd.serving.errors import ServingError
from ctcd.serving.model import LoadedModel
from ctcd.serving.protocols import ScoringRequest, take
from ctcd.serving.schema import Table

BatchObserver = Callable[[int, int], None]  # (requests, rows) of each predict call
ARRIVAL_GAP_S = 0.001  # stop waiting for more requests once none arrived for this long
MAX_WAIT_S = 0.010  # never hold a batch longer than this, however slow the model
INLINE_S = 0.0005  # a batch the model predicts faster than this runs on the event loop


def _limit_native_threads(threads: int) -> None:
    """Run in the predict thread: OpenMP (scikit-learn's gradient boosting) and BLAS use
    ``threads`` threads for this thread's calls."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


class Batcher:
    def __init__(
        self,
        model: LoadedModel,
        *,
        enabled: bool = True,
        max_rows: int = 4096,
        max_wait_ms: float = 0.0,
        threads: int = 1,
        observe: BatchObserver | None = None,
    ) -> None:
        self.model = model
        self.enabled = enabled
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self._observe = observe or (lambda requests, rows: None)
        # One predict at a time per version: requests queue (and merge) behind it. OpenMP's
        # thread count is the calling thread's own, so it is set in that thread.
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="predict",
            initializer=partial(_limit_native_threads, threads) if threads else None)
        self._queue: collections.deque[tuple[ScoringRequest, asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._draining = False
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0
        self._peak = 0  # most requests in flight since the last batch started
        self._queued_rows = 0
        self._arrivals = 0
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._predict_s: float | None = None  # moving average of one predict's duration
        self._fast_rows = 0  # the largest batch measured to predict within INLINE_S
        self._threads = threads
        self._loop_limited = False  # the native thread limit applied on the loop's thread
        self._closing = False

    async def score(self, request: ScoringRequest) -> Any:
        """The model's output for this request's rows."""
        self._inflight += 1
        if self._inflight > self._peak:
            self._peak = self._inflight
        try:
            return await self._score(request)
        finally:
            self._inflight -= 1
            if self._closing and not self._inflight:
                self._executor.shutdown(wait=False)

    async def _score(self, request: ScoringRequest) -> Any:
        loop = asyncio.get_running_loop()
        if not self._batchable(request):
            self._observe(1, request.rows)
            call = partial(self.model.predict, request.model_input(), request.params)
            if request.outputs:
                call = partial(call, outputs=request.outputs)
            return await loop.run_in_executor(self._executor, call)
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((request, future))
        self._queued_rows += request.rows
        self._arrivals += 1
        waiter = self._waiter
        if waiter is not None and (len(self._queue) >= self._want
                                   or self._queued_rows >= self.max_rows):
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain())
        return await future

    def close(self) -> None:
        """Release the predict thread once the requests already holding this version have
        their answers (a version is unloaded while its last requests finish)."""
        self._closing = True
        if not self._inflight:
            self._executor.shutdown(wait=False)

    def _batchable(self, request: ScoringRequest) -> bool:
        return (
            self.enabled
            and request.table is not None
            and not request.params
            and self.model.row_aligned
            and request.rows < self.max_rows
        )

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self.max_wait:
                    batch = self._take()
                    if sum(r.rows for r, _ in batch) < self.max_rows:
                        await asyncio.sleep(self.max_wait)
                        batch += self._take(self.max_rows - sum(r.rows for r, _ in batch))
                else:
                    await self._gather()
                    batch = self._take()
                self._peak = self._inflight
                await self._run(batch)
        finally:
            self._draining = False

    async def _gather(self) -> None:
        """Wait until as many requests are queued as were in flight since the last batch
        started, while they keep arriving (see the module docstring)."""
        self._want = self._peak
        if len(self._queue) >= self._want or self._queued_rows >= self.max_rows:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        predict_s = self._predict_s or 0.0
        deadline = loop.time() + min(MAX_WAIT_S, max(ARRIVAL_GAP_S, predict_s))
        # a pause in arrivals shorter than a client's turnaround is not the end of a wave:
        # gRPC's (answer sent, next request accepted, both through its poller thread) is
        # longer than HTTP's, and grows with the GIL the predict thread holds
        gap = max(ARRIVAL_GAP_S, predict_s / 2)
        seen = self._arrivals
        handle: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal seen, handle
            if waiter.done():
                return
            if self._arrivals == seen or loop.time() >= deadline:
                self._waiter = None
                waiter.set_result(None)
                return
            seen = self._arrivals
            handle = loop.call_later(gap, check)

        handle = loop.call_later(gap, check)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def _take(self, budget: int | None = None) -> list[tuple[ScoringRequest, asyncio.Future[Any]]]:
        budget = self.max_rows if budget is None else budget
        batch: list[tuple[ScoringRequest, asyncio.Future[Any]]] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0][0].rows <= budget):
            item = self._queue.popleft()
            batch.append(item)
            rows += item[0].rows
        self._queued_rows -= rows
        return batch

    async def _run(self, batch: list[tuple[ScoringRequest, asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        tables = [_table(r) for r, _ in batch]
        merged = Table.concat(tables)
        outputs = _union(r.outputs for r, _ in batch)
        self._observe(len(batch), merged.rows)
        try:
            if merged.rows <= self._fast_rows:
                result = self._inline(merged, outputs)
            else:
                result = await loop.run_in_executor(self._executor, self._timed, merged,
                                                    outputs)
        except ServingError as err:
            if len(batch) == 1:
                _settle(batch[0][1], error=err)
                return
            for request, future in batch:  # isolate the request(s) the model refuses
                try:
                    one = await loop.run_in_executor(
                        self._executor, call, self.model, _table(request), request.outputs)
                except Exception as single_err:
                    _settle(future, error=single_err)
                else:
                    _settle(future, result=one)
            return
        except Exception as err:
            for _, future in batch:
                _settle(future, error=err)
            return
        parts = split(result, [r for r, _ in batch], outputs)
        for (_, future), part in zip(batch, parts, strict=True):
            _settle(future, result=part)

    def _inline(self, table: Table, outputs: tuple[str, ...]) -> Any:
        """Predict on the event loop (a batch known to be fast), with the predict thread's
        native thread limit."""
        if not self._loop_limited and self._threads:
            _limit_native_threads(self._threads)
            self._loop_limited = True
        return self._timed(table, outputs)

    def _timed(self, table: Table, outputs: tuple[str, ...]) -> Any:
        started = time.perf_counter()
        result = call(self.model, table, outputs)
        took = time.perf_counter() - started
        average = self._predict_s
        self._predict_s = took if average is None else average + (took - average) * 0.2
        if took < INLINE_S:
            self._fast_rows = max(self._fast_rows, table.rows)
        elif table.rows <= self._fast_rows:
            self._fast_rows = table.rows - 1
        return result


def call(model: LoadedModel, table: Table, outputs: tuple[str, ...]) -> Any:
    """The model's default output (``outputs`` empty), else a dict of each named one."""
    if not outputs:
        return model.predict_table(table)
    return model.predict_table(table, outputs=outputs)


def split(result: Any, requests: Sequence[ScoringRequest], outputs: tuple[str, ...]) -> list[Any]:
    """Each request's rows of a merged call's ``result`` (the outputs it asked for)."""
    parts, start = [], 0
    for request in requests:
        stop = start + request.rows
        if not outputs:
            parts.append(take(result, start, stop))
        elif request.outputs:
            parts.append({name: take(result[name], start, stop) for name in request.outputs})
        else:
            parts.append(take(result["predict"], start, stop))
        start = stop
    return parts


def predict_each(model: LoadedModel, requests: Sequence[ScoringRequest]) -> list[Any]:
    """In a predict thread, each request's output or the exception it raised: the
    requests with a checked table in one merged call, the others one by one; a merged call
    that fails is repeated one by one, so one refused input fails only its own request."""
    out: list[Any] = [None] * len(requests)
    merged = [i for i, r in enumerate(requests)
              if r.table is not None and not r.params and model.row_aligned]
    single = [i for i in range(len(requests)) if i not in set(merged)]
    if len(merged) > 1:
        group = [requests[i] for i in merged]
        outputs = _union(r.outputs for r in group)
        try:
            result = call(model, Table.concat([_table(r) for r in group]), outputs)
        except Exception:
            single += merged
        else:
            for i, part in zip(merged, split(result, group, outputs), strict=True):
                out[i] = part
    else:
        single += merged
    for i in single:
        request = requests[i]
        try:
            if request.table is not None and not request.params:
                out[i] = call(model, request.table, request.outputs)
            else:
                out[i] = model.predict(request.model_input(), request.params,
                                       outputs=request.outputs)
        except Exception as err:  # the caller counts it; nothing here is answered to anyone
            out[i] = err
    return out


def _table(request: ScoringRequest) -> Table:
    if request.table is None:  # _batchable lets only tables in
        raise TypeError("only requests checked into a Table are batched")
    return request.table


def _union(wanted: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The outputs one call on a batch must produce: () when every request wants only
    the default ``predict``; else each output named by any request, and ``predict``
    when some request names none."""
    names: dict[str, None] = {}
    plain = False
    for outputs in wanted:
        if not outputs:
            plain = True
        names.update(dict.fromkeys(outputs))
    if not names:
        return ()
    if plain:
        names.setdefault("predict")
    return tuple(names)


def _settle(future: asyncio.Future[Any], *, result: Any = None,
            error: BaseException | None = None) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
