"""What a training run did, read from Airflow's metadata database: its steps' results
(XComs), its approval (Human-in-the-loop detail) and the note that sums it up.

Used where a session is at hand: the plugin's pages in the API server, and the listener
that writes the run's note in the scheduler (:mod:`ctcd.listeners`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

NOTE_MARK = "**ctcd:**"  # a note the project wrote (a person's own note is never replaced)
STEPS = ("ingest", "validate", "evaluate", "deployment_trigger", "register", "deploy",
         "verify", "approve", "promote")


@dataclass(frozen=True)
class RunRecord:
    """A training run's steps, as Airflow recorded them."""

    dag_id: str
    run_id: str
    state: str | None
    xcoms: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    task_states: Mapping[str, str | None] = field(default_factory=dict)
    approval: Mapping[str, Any] | None = None  # the HITL detail of `approve`, if it asked

    def value(self, task_id: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_id, key))

    def mapping(self, task_id: str, key: str = "return_value") -> dict[str, Any]:
        value = self.value(task_id, key)
        return dict(value) if isinstance(value, Mapping) else {}

    @property
    def is_training(self) -> bool:
        return (("deployment_trigger", "decision") in self.xcoms
                or "deployment_trigger" in self.task_states)


def read_run(session: Session, dag_id: str, run_id: str) -> RunRecord | None:
    from airflow.models.dagrun import DagRun
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id))
    if run is None:
        return None
    rows = session.execute(select(XComModel.task_id, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id,
        XComModel.task_id.in_(STEPS))).all()
    xcoms = {(str(task), str(key)): plain(value) for task, key, value in rows}
    tis = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.id).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
    states = {task: (str(state) if state else None) for task, state, _ in tis}
    approval = None
    approve_ids = [ti_id for task, _, ti_id in tis if task == "approve"]
    if approve_ids:
        detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == approve_ids[0]))
        if detail is not None:
            approval = {"subject": detail.subject, "body": detail.body,
                        "chosen": list(detail.chosen_options or []),
                        "responded_by": detail.responded_by_user_name,
                        "responded_at": detail.responded_at, "created_at": detail.created_at}
    return RunRecord(dag_id, run_id, str(run.state) if run.state else None, xcoms, states,
                     approval)


def pending_approvals(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """Approval steps waiting for a person now, oldest first."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id,
               TaskInstance.map_index, HITLDetail.subject, HITLDetail.created_at)
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
               TaskInstance.task_id == "approve")
        .order_by(HITLDetail.created_at).limit(limit)).all()
    return [{"dag_id": d, "run_id": r, "task_id": t, "map_index": m, "subject": s,
             "created_at": c} for d, r, t, m, s, c in rows]


def note(record: RunRecord) -> str | None:
    """The run's note: the gate's decision, the approval and what serves now."""
    decision = record.mapping("deployment_trigger", "decision")
    if not decision:
        return None
    registered = record.mapping("register")
    version = registered.get("version")
    lines = [f"{NOTE_MARK} gate: {'deploy' if decision.get('deploy') else 'no deploy'} "
             f"({decision.get('reason', '')})."]
    lines += _approval(record, version)
    promoted = record.mapping("promote")
    if promoted.get("champion"):
        lines.append(f"Version {promoted['champion']} is the champion.")
    failed = [t for t, s in record.task_states.items() if s in ("failed", "upstream_failed")]
    if failed:
        lines.append(f"Failed at {', '.join(sorted(failed))}; the previous version serves.")
    return " ".join(lines)


def _approval(record: RunRecord, version: Any) -> list[str]:
    """The answer, from the Human-in-the-loop detail (a rejection skips ``promote`` by
    raising, so ``approve`` returns nothing then)."""
    detail = record.approval or {}
    chosen = list(detail.get("chosen") or [])
    if not chosen:
        asked = record.task_states.get("approve") == "awaiting_input"
        return [f"Version {version} waits for approval."] if asked else []
    by = detail.get("responded_by")
    if chosen == ["Approve"]:
        return [f"Version {version} approved by {by}."]
    answer = f"rejected by {by}" if by else "rejected: no answer in time (the default answer)"
    return [f"Version {version} {answer}; it was rolled back, the champion serves."]


def plain(value: Any) -> Any:
    """An XCom value as stored (JSON text, or a serialized object's ``__data__``)."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict) and "__data__" in value and "__classname__" in value:
        return value["__data__"]
    return value
