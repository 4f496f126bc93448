"""What a later try of the approval step knows of an earlier one, and how it gets the answer
given to it.

Airflow 3.3's scheduler fails a Human-in-the-loop try answered moments after it asked: the
try resumed by the answer shares the executor key of the try that asked and exited, and
when the scheduler processes that exit only after the resume, it takes the resumed try for
one whose state changed externally and retries it. Depending on the moment, the resumed try
never ran, or ran to the end (acted on the answer) before being marked for retry. The next
try must neither ask again (the base class's request would erase the answer given) nor act
twice, so each try records in the task state store (kept across tries) that it asked, and
then the answer it acted on.

A clear is not a retry: clearing sets the task's ``max_tries`` anew, so a try started by a
clear asks afresh; a retry keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

KEY = "ctcd.approval.asked"
# How long a retried try waits before reading the answer given to an earlier try: the
# scheduler must have seen that try exit first, or it fails the resumed try again.
RECOVERY_SECONDS = 10
NO_ANSWER = "no_answer"  # AnswerGivenTrigger's event when nobody had answered


@dataclass(frozen=True)
class EarlierTry:
    try_number: int
    acted: Mapping[str, Any] | None  # the answer it acted on, JSON (see record_acted)


def _try_number(context: Any) -> int:
    return int(getattr(context["ti"], "try_number", 1) or 1)


def _max_tries(context: Any) -> int:
    return int(getattr(context["ti"], "max_tries", 0) or 0)


def earlier_try(context: Any) -> EarlierTry | None:
    """The earlier try of this retry cycle that asked, if this try is a retry of it."""
    record = context["task_state_store"].get(KEY)
    if not isinstance(record, Mapping):
        return None
    if int(record.get("try", 0)) >= _try_number(context) or (
            record.get("max_tries") != _max_tries(context)):
        return None  # this try asked itself (a resume), or a clear started a new cycle
    acted = record.get("acted")
    return EarlierTry(int(record["try"]), acted if isinstance(acted, Mapping) else None)


def record_asked(context: Any) -> None:
    context["task_state_store"].set(KEY, {"try": _try_number(context),
                                          "max_tries": _max_tries(context)})


def record_acted(context: Any, event: Mapping[str, Any]) -> None:
    """After this try's actions (rollback, shadow promotion, registry tag), before the
    base class ends it: a retry of this try finishes without acting again."""
    store = context["task_state_store"]
    record = store.get(KEY)
    responded = event.get("responded_at")
    acted = {"chosen_options": list(event.get("chosen_options") or []),
             "params_input": dict(event.get("params_input") or {}),
             "responded_at": responded.isoformat() if isinstance(responded, datetime) else (
                 str(responded) if responded else None),
             "responded_by_user": event.get("responded_by_user"),
             "timedout": bool(event.get("timedout"))}
    base = dict(record) if isinstance(record, Mapping) else {
        "try": _try_number(context), "max_tries": _max_tries(context)}
    store.set(KEY, {**base, "acted": acted})


def as_event(acted: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded answer as the event the base class's ``execute_complete`` takes."""
    responded = acted.get("responded_at")
    return {**acted, "responded_at": datetime.fromisoformat(responded) if responded else None}


class AnswerGivenTrigger(BaseTrigger):
    """The answer already given to a task instance's question, read after ``delay`` seconds
    (the HITL detail is readable from a trigger, not from a task): its event is the one the
    approval step gets when answered, or ``{"no_answer": true}``."""

    def __init__(self, *, ti_id: str, delay: float) -> None:
        super().__init__()
        self.ti_id = ti_id
        self.delay = delay

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"ti_id": self.ti_id, "delay": self.delay})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from uuid import UUID

        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        await asyncio.sleep(self.delay)
        found = await sync_to_async(get_hitl_detail_content_detail)(ti_id=UUID(self.ti_id))
        if not (found.response_received and found.chosen_options):
            self.log.info("No answer was given to the earlier question.")
            yield TriggerEvent({NO_ANSWER: True})
            return
        user = found.responded_by_user
        self.log.info("Answer given earlier: %s by %s at %s.", list(found.chosen_options),
                      user.name if user is not None else "the default", found.responded_at)
        yield TriggerEvent({
            "chosen_options": list(found.chosen_options),
            "params_input": found.params_input or {}, "responded_at": found.responded_at,
            "responded_by_user": {"id": user.id, "name": user.name} if user else None,
            "timedout": user is None})
