"""The plugin's Airflow listeners.

* ``on_starting`` in a task process: keep library warnings out of the task's log, once,
  before the task runs (:mod:`ctcd.task_logs`).
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl


@hookimpl
def on_starting(component: Any) -> None:
    if type(component).__name__ == "TaskRunnerMarker":
        from ctcd.task_logs import quiet_module_scans

        quiet_module_scans()
