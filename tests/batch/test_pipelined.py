"""The overlapped runner under batch scoring: order, bounded read-ahead, errors, early exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ctcd.batch.pipelined import Pipelined


def _counted(n: int, pulled: list[int], closed: threading.Event) -> Iterator[int]:
    try:
        for i in range(n):
            pulled.append(i)
            yield i
    finally:
        closed.set()


def test_results_keep_their_order_and_read_ahead_is_bounded() -> None:
    pulled: list[int] = []
    closed = threading.Event()
    ahead = []
    with Pipelined(_counted(50, pulled, closed), lambda i: i * i, depth=2) as results:
        out = []
        for value in results:
            time.sleep(0.005)  # a slow writer: the reader must wait, not pile up
            ahead.append(len(pulled) - len(out))
            out.append(value)
    assert out == [i * i for i in range(50)]
    # two queues of 2, one item in the worker, one in the reader's hand, one just taken
    assert max(ahead) <= 2 * 2 + 3
    assert closed.is_set()


def test_an_error_while_reading_is_raised_in_the_callers_thread() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("truncated file")

    with pytest.raises(ValueError, match="truncated file"), \
            Pipelined(items(), lambda i: i) as results:
        list(results)


def test_an_error_while_working_is_raised_and_stops_the_reader() -> None:
    pulled: list[int] = []
    closed = threading.Event()

    def work(i: int) -> int:
        if i == 3:
            raise RuntimeError("model refused everything")
        return i

    with pytest.raises(RuntimeError, match="model refused"), \
            Pipelined(_counted(10_000, pulled, closed), work) as results:
        list(results)
    assert closed.wait(5) and len(pulled) < 20


def test_leaving_early_stops_both_threads() -> None:
    pulled: list[int] = []
    closed = threading.Event()
    before = threading.active_count()
    with pytest.raises(KeyError), Pipelined(_counted(10_000, pulled, closed), str) as results:
        for value in results:
            if value == "5":
                raise KeyError("the sink failed")
    assert closed.is_set() and len(pulled) < 20
    assert threading.active_count() == before
