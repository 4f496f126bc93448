"""A model file: one YAML file under ``include/models/`` describes one model, and the
project generates its DAGs (continuous training, batch inference, monitoring) from it.

The shortest file names its data set; everything else has a default::

    dataset: churn

A fuller one (every section is optional)::

    name: churn-classifier          # registered model name (default: the file's name)
    dataset: churn                  # include/datasets/churn.yaml
    task: binary                    # binary | multiclass | regression (default: from the label)
    trainer:
      estimator: hist_gradient_boosting     # a shortcut, or any estimator's dotted class path
      hyperparameters: {max_iter: 150}
      # or: function: my_models.churn:train  (your own training code; see ctcd.training)
    gate: {metric: roc_auc, threshold: 0.75, min_improvement: 0.0}
    training: {window: {partitions: 1}, holdout_fraction: 0.2, seed: 0}
    source: {kind: landing}         # or sql, with sql_conn_id and sql_query
    deployment: {strategy: blue_green, workers: 1, server_options: {max_batch_rows: "256"}}
    schedule: {on_new_data: true, cron: "0 0 * * *"}
    monitoring: {enabled: true, schedule: "@hourly", params: {psi_threshold: 0.2}}
    batch: {enabled: true, schedule: "0 2 * * *", params: {mode: in_process}}

Cheap to import (pydantic only): DAG files read model files when Airflow parses them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ctcd.models.tasks import DEFAULT_METRIC, Task, metric

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
# "module.path:function" (a trainer function) or "module.path.Class" / "module.path:Class".
FUNCTION_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$")

HoldoutFraction = Annotated[float, Field(ge=0.05, le=0.5)]
Strategy = Literal["replace", "blue_green", "canary", "shadow"]
SourceKind = Literal["landing", "sql"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TrainerSection(_Section):
    """What trains the model: ``estimator`` (the built-in trainer: the data set's
    preprocessing and this estimator) or ``function`` (your own code)."""

    estimator: str | None = Field(
        default=None,
        description="A shortcut (hist_gradient_boosting, random_forest, logistic_regression, "
        "ridge) or the dotted class path of any scikit-learn-compatible estimator, e.g. "
        "xgboost.XGBClassifier. Default: hist_gradient_boosting.")
    function: str | None = Field(
        default=None,
        description="Your training function as `module.path:function`, imported from your "
        "installed packages or from the code directory (CTCD_CODE_DIR, default include/).")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The estimator's hyperparameters, or the params your function gets.")

    @model_validator(mode="after")
    def _one_kind(self) -> TrainerSection:
        if self.estimator and self.function:
            raise ValueError("trainer: give `estimator` or `function`, not both")
        if self.function and not FUNCTION_PATH.match(self.function):
            raise ValueError(f"trainer.function: {self.function!r} is not `module.path:function`"
                             " (e.g. my_models.churn:train)")
        if self.estimator and "." in self.estimator and not CLASS_PATH.match(self.estimator):
            raise ValueError(f"trainer.estimator: {self.estimator!r} is neither a shortcut nor a "
                             "dotted class path (e.g. sklearn.linear_model.Ridge)")
        return self

    @property
    def kind(self) -> Literal["estimator", "function"]:
        return "function" if self.function else "estimator"


class GateSection(_Section):
    """When a candidate may be deployed: its holdout ``metric`` passes ``threshold`` (if
    set) and beats the champion's on the same rows by at least ``min_improvement``."""

    metric: str | None = Field(
        default=None, description="Holdout metric of the task (default: roc_auc, f1_macro or "
        "rmse); see the metrics table in the docs.")
    threshold: float | None = Field(
        default=None, description="Deploy only at or above it (at or below, for errors).")
    min_improvement: float = Field(
        default=0.0, ge=0.0, description="Required gain over the champion's metric.")


class WindowSection(_Section):
    """Which partitions a run trains on, ending with the newest one not trained on yet."""

    partitions: int | None = Field(default=None, ge=1, le=366,
                                   description="The last N partitions.")
    days: int | None = Field(default=None, ge=1, le=3660,
                             description="The partitions of the last N days.")

    @model_validator(mode="after")
    def _one_bound(self) -> WindowSection:
        if self.partitions is not None and self.days is not None:
            raise ValueError("training.window: give `partitions` or `days`, not both")
        return self


class TrainingSection(_Section):
    window: WindowSection = Field(default_factory=lambda: WindowSection(partitions=1),
                                  description="Default: the newest partition only.")
    holdout_fraction: HoldoutFraction = Field(
        default=0.2, description="Share of rows held out for evaluation (by a hash of the id).")
    seed: int = Field(default=0, ge=0, description="Seed of the estimator and your function.")


class SourceSection(_Section):
    kind: SourceKind = Field(default="landing", description="`landing` or `sql`.")
    landing_uri: str = Field(
        default="", description="Empty: file://$CTCD_HOME/landing/<dataset>/.")
    landing_conn_id: str = Field(default="", description="Airflow connection with the "
                                 "credentials of landing_uri (s3, gs).")
    sql_conn_id: str = Field(default="ctcd_data", description="Airflow connection of the SQL "
                             "source (common.sql).")
    sql_query: str = Field(default="", description="Empty: SELECT * FROM <dataset>.")


class DeploymentSection(_Section):
    strategy: Strategy = Field(default="blue_green", description="How a new version replaces "
                               "the serving one (the run's `strategy` Param).")
    strategy_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of `strategy`, e.g. canary's {steps: [0.1, "
        "0.5], interval_seconds: 30}; a run that deploys with another strategy uses its defaults.")
    deployer: str | None = Field(
        default=None, description="Backend (local, kubernetes, or a dotted path); "
        "default CTCD_DEPLOYER.")
    server: str | None = Field(default=None, description="Model-server name (default: the "
                               "model's name, one server per model).")
    workers: int = Field(default=1, ge=1, le=64, description="Model-server worker processes.")
    server_options: dict[str, str] = Field(
        default_factory=dict, description="Model-server settings, e.g. {max_batch_rows: '256'}.")
    timeout: int = Field(default=300, ge=10, le=7200, description="Seconds for the deploy.")
    verify_rows: int = Field(default=200, ge=1, le=100_000,
                             description="Holdout rows `verify` sends to the endpoint.")
    tolerance: float = Field(
        default=1e-6, ge=0.0, description="verify: largest difference allowed between the "
        "served and the registered model's numeric answers (relative and absolute).")
    approval: bool = Field(
        default=False, description="Ask a person to approve each verified version before "
        "it is promoted (the UI's Required Actions, or the REST API); Reject, or no answer "
        "in time, rolls it back. The run's `approval` Param overrides it.")
    approval_timeout_minutes: int = Field(
        default=1440, ge=1, le=43_200, description="How long the approval waits; then the "
        "default answer, Reject, applies.")

    @field_validator("server_options", mode="before")
    @classmethod
    def _options_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class ScheduleSection(_Section):
    on_new_data: bool = Field(default=True, description="Run when the data set's Asset updates.")
    cron: str | None = Field(default="0 0 * * *", description="Also on this cron (UTC); null: "
                             "only on new data and when triggered.")


class MonitoringSection(_Section):
    enabled: bool = Field(default=True, description="Generate the model's monitoring DAG.")
    schedule: str | None = Field(default="@hourly", description="Cron (UTC) of its checks.")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Defaults of the monitoring DAG's Params.")


class BatchSection(_Section):
    enabled: bool = Field(default=True, description="Generate the model's batch inference DAG.")
    schedule: str | None = Field(default="0 2 * * *", description="Cron (UTC), besides the "
                                 "new champion's and the scoring data's Assets.")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Defaults of the batch inference DAG's Params.")


class ModelDefinition(_Section):
    """One model file (``include/models/<key>.yaml``)."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN,
                             description="Registered model name; default: the file's name.")
    dataset: str = Field(pattern=NAME_PATTERN, description="Data set spec it trains on.")
    task: Task | None = Field(default=None, description="binary, multiclass or regression; "
                              "default: from the data set's label (classes or a number).")
    description: str = Field(default="", description="Shown at the top of its DAGs' docs.")
    owner: str = Field(default="ml-platform", description="Its DAGs' owner.")
    tags: tuple[str, ...] = Field(default=(), description="More tags of its DAGs (besides "
                                  "ctcd, the kind, and model:<file name>).")
    trainer: TrainerSection = Field(default_factory=TrainerSection,
                                    description="What trains it.")
    gate: GateSection = Field(default_factory=GateSection, description="When it deploys.")
    training: TrainingSection = Field(default_factory=TrainingSection,
                                      description="What it trains on.")
    source: SourceSection = Field(default_factory=SourceSection,
                                  description="Where its data set's partitions come from.")
    deployment: DeploymentSection = Field(default_factory=DeploymentSection,
                                          description="How it is deployed and verified.")
    schedule: ScheduleSection = Field(default_factory=ScheduleSection,
                                      description="When its training DAG runs.")
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection,
                                          description="Its monitoring DAG.")
    batch: BatchSection = Field(default_factory=BatchSection,
                                description="Its batch inference DAG.")

    _key: str = PrivateAttr(default="")
    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelDefinition:
        if self.task is not None and self.gate.metric is not None:
            try:
                metric(self.task, self.gate.metric)
            except ValueError as err:
                raise ValueError(f"gate.metric: {err}") from None
        return self

    # -- what the loader filled in ------------------------------------------------------

    @property
    def key(self) -> str:
        """The file's name without .yaml: it names the model's DAGs."""
        return self._key

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def model_name(self) -> str:
        return self.name or self._key

    @property
    def resolved_task(self) -> Task:
        if self.task is None:
            raise ValueError(f"model {self.model_name!r}: the task was not resolved (load the "
                             "model file with ctcd.models.load_model)")
        return self.task

    @property
    def gate_metric(self) -> str:
        return self.gate.metric or DEFAULT_METRIC[self.resolved_task]

    def attach(self, key: str, path: Path | None, task: Task | None) -> ModelDefinition:
        """A copy with the loader's facts: its key, file and resolved task."""
        copy = self.model_copy(update={"task": task})
        copy._key = key
        copy._path = path
        return copy

    # -- DAG ids ---------------------------------------------------------------------------

    @property
    def training_dag_id(self) -> str:
        return f"{self.key}_training"

    @property
    def batch_dag_id(self) -> str:
        return f"{self.key}_batch_inference"

    @property
    def monitoring_dag_id(self) -> str:
        return f"{self.key}_monitoring"

    def training_params(self) -> dict[str, Any]:
        """The defaults of this model's training run parameters (see ``ctcd.training.params``).
        The trainer's own (``estimator``, ``hyperparameters``) stay empty there, meaning
        "the model file's": a run that names another estimator then gets that estimator's
        defaults, not hyperparameters meant for this one."""
        window = self.training.window
        return {
            "source": self.source.kind,
            "landing_uri": self.source.landing_uri,
            "landing_conn_id": self.source.landing_conn_id,
            "sql_conn_id": self.source.sql_conn_id,
            "sql_query": self.source.sql_query,
            "window_partitions": window.partitions if window.days is None else None,
            "window_days": window.days,
            "holdout_fraction": self.training.holdout_fraction,
            "seed": self.training.seed,
            "threshold": self.gate.threshold,
            "min_improvement": self.gate.min_improvement,
            "strategy": self.deployment.strategy,
            "approval": self.deployment.approval,
            "approval_timeout_minutes": self.deployment.approval_timeout_minutes,
        }
