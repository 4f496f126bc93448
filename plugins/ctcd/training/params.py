"""A training run's parameters: what a run may change of its model file.

One pydantic model, two uses (see ``ctcd.params``): the training DAG's Params form, whose
defaults come from the model file (``ModelDefinition.training_params``), and the in-task
check of a run's ``conf``, which also checks the trainer's hyperparameters against the
model file's estimator and names the parameter at fault.

This module is imported when Airflow parses the DAG file: keep it free of heavy imports
(pandas, scikit-learn, mlflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ctcd.errors import InvalidParams
from ctcd.models.definition import HoldoutFraction, ModelDefinition, SourceKind, Strategy
from ctcd.params import validate_params


class ContinuousTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: SourceKind = Field(
        default="landing",
        description="Where partitions come from: `landing` (dated partitions under "
        "landing_uri) or `sql` (sql_query through the Airflow connection sql_conn_id).",
    )
    landing_uri: str = Field(
        default="",
        description="ObjectStoragePath URI holding date=YYYY-MM-DD/*.parquet|*.csv partitions; "
        "empty: file://$CTCD_HOME/landing/<dataset>/. s3:// and gs:// need their provider.",
    )
    landing_conn_id: str = Field(
        default="", description="Airflow connection with credentials for landing_uri (s3, gs)."
    )
    sql_conn_id: str = Field(
        default="ctcd_data", description="Airflow connection of the SQL source (common.sql)."
    )
    sql_query: str = Field(
        default="",
        description="Query returning the data set's rows (with its partition column); "
        "empty: SELECT * FROM <dataset>.",
    )
    snapshot_date: date | None = Field(
        default=None,
        description="Newest partition to train on (YYYY-MM-DD); empty: the newest partition of "
        "the source. A partition already trained on is skipped unless `force`.",
    )
    force: bool = Field(
        default=False,
        description="Train even on a partition already trained on, or older than the last one.",
    )
    window_partitions: int | None = Field(
        default=1, ge=1, le=366,
        description="Train on the last N partitions up to the newest (empty: use window_days).",
    )
    window_days: int | None = Field(
        default=None, ge=1, le=3660,
        description="Train on the partitions of the last N days up to the newest (instead of "
        "window_partitions).",
    )
    estimator: str = Field(
        default="",
        description="The built-in trainer's estimator: a shortcut or a dotted class path; "
        "empty: the model file's. Not for a model trained by your own function.",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The estimator's hyperparameters (or your function's params); empty: the "
        "model file's.",
    )
    holdout_fraction: HoldoutFraction = Field(
        default=0.2, description="Share of rows held out for evaluation."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the estimator and your function: "
                      "the same data and params give the same model.")
    threshold: float | None = Field(
        default=None,
        description="Deploy only when the gate's metric passes this (at or above it; at or "
        "below for an error such as rmse); empty: no threshold.",
    )
    min_improvement: float = Field(
        default=0.0, ge=0.0, description="Required gain of the gate's metric over the champion."
    )
    strategy: Strategy = Field(
        default="blue_green", description="How the new version replaces the serving one."
    )
    trigger_reason: str | None = Field(
        default=None, description="Why this run was started (set by the monitoring DAG on drift)."
    )
    approval: bool = Field(
        default=False, description="Wait for a person to approve the verified version "
        "before promoting it (Required Actions); Reject or no answer rolls it back."
    )
    approval_timeout_minutes: int = Field(
        default=1440, ge=1, le=43_200, description="Minutes the approval waits before its "
        "default answer, Reject, applies."
    )

    def effective_estimator(self, definition: ModelDefinition) -> str:
        from ctcd.training.model import DEFAULT_ESTIMATOR

        return self.estimator or definition.trainer.estimator or DEFAULT_ESTIMATOR

    def effective_hyperparameters(self, definition: ModelDefinition) -> dict[str, Any]:
        """The run's, else the model file's (for the model file's estimator), else (a
        shortcut) the shortcut's defaults."""
        from ctcd.training.model import DEFAULT_HYPERPARAMETERS

        if self.hyperparameters:
            return dict(self.hyperparameters)
        own = not self.estimator or self.estimator == definition.trainer.estimator
        if definition.trainer.hyperparameters and own:
            return dict(definition.trainer.hyperparameters)
        if definition.trainer.function:
            return {}
        return dict(DEFAULT_HYPERPARAMETERS.get(self.effective_estimator(definition), {}))


def parse_params(conf: Mapping[str, Any], definition: ModelDefinition) -> ContinuousTrainingParams:
    """A run's params/conf for ``definition``'s training DAG; InvalidParams naming each bad
    parameter (the model file's values stand where the conf says nothing). Whether the
    trainer can run with them is ``ctcd.training.trainers.check``'s to say (it imports it)."""
    params = validate_params(ContinuousTrainingParams, {**definition.training_params(),
                                                        **dict(conf)}, "run")
    if params.window_partitions is not None and params.window_days is not None:
        if "window_days" in conf and "window_partitions" not in conf:
            params = params.model_copy(update={"window_partitions": None})
        elif "window_partitions" in conf and "window_days" not in conf:
            params = params.model_copy(update={"window_days": None})
        else:
            raise InvalidParams("Invalid run configuration: give window_partitions or "
                                "window_days, not both.")
    if params.estimator and definition.trainer.function:
        raise InvalidParams(f"Invalid run configuration: parameter 'estimator': model "
                            f"{definition.key} is trained by {definition.trainer.function}, "
                            "not by an estimator; leave it empty.")
    return params
