"""The plugin's Airflow listeners.

* ``on_starting`` in a task process: keep library warnings out of the task's log, once,
  before the task runs (:mod:`ctcd.task_logs`).
* ``on_dag_run_success`` / ``on_dag_run_failed`` where a run ends (the scheduler; the API
  server when a person marks a run): write a training run's note, the first thing the UI
  shows of a run: the gate's decision and why (candidate against champion, threshold), the
  approval, what serves now (:func:`ctcd.ui.runs.note`). A note a person wrote is kept.
  Tasks cannot write a run's note (no Task SDK call does, and they have no database), so it
  is written here, in the session that ends the run.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def on_starting(component: Any) -> None:
    if type(component).__name__ == "TaskRunnerMarker":
        from ctcd.task_logs import quiet_module_scans

        quiet_module_scans()


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    write_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    write_note(dag_run)


def write_note(dag_run: Any) -> str | None:
    """Set the note of a training run that ended (in the caller's session, committed with
    the run's new state); returns the note written, if any."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import object_session

    from ctcd.ui.runs import NOTE_MARK, note, read_run

    session = object_session(dag_run)
    if session is None:
        return None
    try:
        record = read_run(session, dag_run.dag_id, dag_run.run_id)
        text = note(record) if record is not None and record.is_training else None
        current = dag_run.note
        if not text or (current and not str(current).startswith(NOTE_MARK)):
            return None
        dag_run.note = text[:1000]
        log.info("note of %s %s: %s", dag_run.dag_id, dag_run.run_id, text)
        return text
    except (SQLAlchemyError, ValueError, TypeError, KeyError) as err:
        # A note must never break the loop that ends runs; the task logs still say it all.
        log.warning("could not write the note of %s %s: %s", dag_run.dag_id, dag_run.run_id,
                    err)
        return None
