"""What the DAG files need to generate a model's DAGs from its model file: the schedules,
tags, docs and the Assets. Cheap to import (Airflow's SDK, pydantic and yaml only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ctcd.models.definition import ModelDefinition


def schedule(cron: str | None, assets: Any | None) -> Any:
    """Assets and/or a cron (UTC). No start_date and ``run_immediately=0``: the first timed
    run is the next tick, not one at unpause (Airflow's default runs the last tick at once
    when a DAG is unpaused soon after it)."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    timetable = (CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))
                 if cron else None)
    if timetable is not None and assets is not None:
        return AssetOrTimeSchedule(timetable=timetable, assets=assets)
    return timetable if timetable is not None else assets


def training_schedule(model: ModelDefinition) -> Any:
    from ctcd.data.assets import dataset_asset

    on_data = dataset_asset(model.dataset) if model.schedule.on_new_data else None
    return schedule(model.schedule.cron, on_data)


def batch_schedule(model: ModelDefinition) -> Any:
    from ctcd.batch.assets import scoring_asset, serving_asset

    return schedule(model.batch.schedule,
                    serving_asset(model.model_name) | scoring_asset(model.dataset))


def tags(model: ModelDefinition, *kinds: str) -> list[str]:
    return ["ctcd", *kinds, f"model:{model.key}", *model.tags]


def doc(model: ModelDefinition, body: str) -> str:
    """The DAG's ``doc_md``: the model file's facts and description, then ``body``."""
    trainer = model.trainer.function or model.trainer.estimator or "hist_gradient_boosting"
    head = (f"### {model.model_name}\n\n{model.description.strip()}\n\n"
            f"| | |\n|---|---|\n| model file | `{model.path}` |\n"
            f"| data set | `{model.dataset}` |\n| task | {model.task} |\n"
            f"| trainer | `{trainer}` |\n| gate | {model.gate_metric}"
            f"{'' if model.gate.threshold is None else f' (threshold {model.gate.threshold})'}"
            f" |\n| DAGs | `{model.training_dag_id}`, `{model.batch_dag_id}`, "
            f"`{model.monitoring_dag_id}` |\n\n")
    return head + body


def default_args(model: ModelDefinition, *, retries: int = 2, retry_seconds: int = 20,
                 timeout: timedelta = timedelta(minutes=30)) -> dict[str, Any]:
    return {
        "owner": model.owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=retry_seconds),
        "execution_timeout": timeout,
    }
