"""A generic overlapped runner: read ahead, work, and hand results to the caller's thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

PIPELINE_DEPTH: Final = 2  # items waiting between two steps

T = TypeVar("T")
R = TypeVar("R")


class Pipelined(Generic[T, R]):
    """``work(item)`` for each item, in order, as three overlapping steps: a reader thread
    pulls ``items``, a worker thread applies ``work``, and the caller iterates the results.
    At most ``depth`` items wait between two steps, so memory stays bounded.

    ``with Pipelined(items, work) as results: for r in results: ...``. An error in the
    reader or the worker is raised from the results iterator in the caller's thread (so a
    sink there rolls back); leaving the block early stops both threads. The caller's thread
    keeps what must stay in it: database connections, Airflow's task context.
    """

    def __init__(self, items: Iterable[T], work: Callable[[T], R], *,
                 depth: int = PIPELINE_DEPTH) -> None:
        self._items, self._work = items, work
        self._ahead: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._behind: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._read, name="ctcd-score-read", daemon=True),
                         threading.Thread(target=self._run, name="ctcd-score-work", daemon=True)]

    def __enter__(self) -> Iterator[R]:
        for thread in self._threads:
            thread.start()
        return self._results()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _results(self) -> Iterator[R]:
        while True:
            item = self._get(self._behind)
            if item is _END:
                return
            yield item

    def _get(self, source: queue.Queue[Any]) -> Any:
        """The next item; _END when stopped (the caller raises the first error)."""
        while True:
            if self._errors:
                raise self._errors[0]
            try:
                return source.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set() and not self._errors:
                    return _END

    def _put(self, target: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                target.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, error: BaseException) -> None:
        self._errors.append(error)
        self._stop.set()

    def _read(self) -> None:
        iterator = iter(self._items)
        try:
            for item in iterator:
                if not self._put(self._ahead, item):
                    return
            self._put(self._ahead, _END)
        except BaseException as err:
            self._fail(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _run(self) -> None:
        try:
            while True:
                item = self._get(self._ahead)
                if item is _END:
                    self._put(self._behind, _END)
                    return
                if self._stop.is_set():
                    return
                if not self._put(self._behind, self._work(item)):
                    return
        except BaseException as err:
            if not self._errors:  # the reader's error is already there
                self._fail(err)


_END: Final = object()
_POLL_S: Final = 0.05
