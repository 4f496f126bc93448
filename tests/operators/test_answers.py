"""How a try of the approval step tells a retry from a clear, and what it knows of the
earlier try. The task state store here is a dict behind the accessor's three methods (the
real one needs a task's supervisor; tests/stack/test_approval_e2e.py runs these on the real
one, under the real scheduler); the try numbers are those Airflow gives: a retry keeps
``max_tries``, a clear sets it to ``try_number + retries``."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from ctcd.operators import answers

RETRIES = 3


class Store:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def _context(store: Store, try_number: int, max_tries: int = RETRIES) -> dict[str, Any]:
    return {"task_state_store": store,
            "ti": SimpleNamespace(try_number=try_number, max_tries=max_tries)}


EVENT = {"chosen_options": ["Reject"], "params_input": {},
         "responded_at": datetime(2026, 12, 6, 14, 0, tzinfo=UTC),
         "responded_by_user": {"id": "admin", "name": "admin"}, "timedout": False}


def test_a_first_try_and_its_own_resume_know_no_earlier_try() -> None:
    store = Store()
    assert answers.earlier_try(_context(store, 1)) is None
    answers.record_asked(_context(store, 1))
    assert answers.earlier_try(_context(store, 1)) is None  # resumed: same try


def test_a_retry_of_a_try_that_asked_recovers_its_answer() -> None:
    store = Store()
    answers.record_asked(_context(store, 1))
    earlier = answers.earlier_try(_context(store, 2))
    assert earlier == answers.EarlierTry(1, None)


def test_a_retry_of_a_try_that_acted_gets_the_answer_it_acted_on() -> None:
    store = Store()
    answers.record_asked(_context(store, 1))
    answers.record_acted(_context(store, 1), EVENT)
    earlier = answers.earlier_try(_context(store, 2))
    assert earlier is not None and earlier.try_number == 1 and earlier.acted is not None
    assert answers.as_event(earlier.acted) == EVENT  # as the base class takes it


def test_a_clear_starts_anew_whatever_the_earlier_try_did() -> None:
    store = Store()
    answers.record_asked(_context(store, 1))
    answers.record_acted(_context(store, 1), EVENT)
    cleared = _context(store, 2, max_tries=1 + RETRIES)
    assert answers.earlier_try(cleared) is None
    answers.record_asked(cleared)
    assert answers.earlier_try(_context(store, 3, max_tries=1 + RETRIES)) == (
        answers.EarlierTry(2, None))


def test_the_trigger_serializes_to_itself() -> None:
    trigger = answers.AnswerGivenTrigger(ti_id="01a24b93-1384-7a59-ad8a-0ec61e9f4671",
                                         delay=10)
    path, kwargs = trigger.serialize()
    assert path == "ctcd.operators.answers.AnswerGivenTrigger"
    assert answers.AnswerGivenTrigger(**kwargs).serialize() == (path, kwargs)
