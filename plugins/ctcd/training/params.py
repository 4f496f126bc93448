"""The continuous_training run parameters: one pydantic model, two uses.

- ``airflow_params()`` turns it into typed Airflow ``Param``s (JSON schema), so the UI
  trigger form shows typed fields and the REST API rejects a bad value with a 400.
- ``parse_params()`` re-checks a run's whole ``conf`` inside the first task, which also
  catches what Airflow lets through (unknown keys, hyperparameters for the wrong model,
  runs created without the API's validation), and names the parameter at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctcd.errors import InvalidParams

# This module is imported when Airflow parses the DAG file: keep it free of heavy imports
# (pandas, scikit-learn, mlflow). A test checks this literal against the estimator table.
ModelType = Literal["hist_gradient_boosting", "random_forest", "logistic_regression"]

DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31},
    "random_forest": {"n_estimators": 100, "max_depth": 12, "n_jobs": 1},
    "logistic_regression": {"C": 1.0, "max_iter": 500},
}


class ContinuousTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        default="churn",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Data set to train on: the spec include/datasets/<dataset>.yaml.",
    )
    source: Literal["landing", "sql"] = Field(
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
        description="Partition to train on (YYYY-MM-DD); empty: the newest partition of the "
        "source. A partition already trained on is skipped unless `force`.",
    )
    force: bool = Field(
        default=False,
        description="Train even on a partition already trained on, or older than the last one.",
    )
    model_type: ModelType = Field(default="hist_gradient_boosting", description="Estimator.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Estimator hyperparameters; empty: the defaults for the model type.",
    )
    holdout_fraction: float = Field(
        default=0.2, ge=0.05, le=0.5, description="Share of rows held out for evaluation."
    )
    min_roc_auc: float = Field(
        default=0.75, ge=0.5, le=1.0, description="Deploy only at or above this holdout ROC AUC."
    )
    min_improvement: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Required ROC AUC gain over the champion."
    )
    strategy: Literal["replace", "blue_green", "canary"] = Field(
        default="blue_green", description="How the new version replaces the serving one."
    )
    trigger_reason: str | None = Field(
        default=None, description="Why this run was started (set by model_monitoring on drift)."
    )

    @model_validator(mode="after")
    def _hyperparameters_fit_model(self) -> ContinuousTrainingParams:
        from ctcd.training.model import build_pipeline

        try:
            build_pipeline(self.model_type, self.effective_hyperparameters)
        except (TypeError, ValueError) as err:
            raise ValueError(f"hyperparameters: {err}") from err
        return self

    @property
    def effective_hyperparameters(self) -> dict[str, Any]:
        return self.hyperparameters or DEFAULT_HYPERPARAMETERS[self.model_type]


def parse_params(conf: Mapping[str, Any]) -> ContinuousTrainingParams:
    """Validate a run's params/conf; raise InvalidParams naming each bad parameter."""
    return validate_params(ContinuousTrainingParams, conf, "run")


M = TypeVar("M", bound=BaseModel)


def validate_params(model: type[M], conf: Mapping[str, Any], what: str) -> M:
    """``conf`` as ``model``; else InvalidParams naming each bad parameter (``what``: whose
    configuration, for the message) and listing the valid ones."""
    try:
        return model.model_validate(dict(conf))
    except ValidationError as err:
        problems = []
        for error in err.errors():
            name = ".".join(str(part) for part in error["loc"])
            if not name:  # a whole-model check; its message starts with the parameter's name
                problems.append(str(error["msg"]).removeprefix("Value error, "))
            elif error["type"] == "extra_forbidden":
                problems.append(f"unknown parameter '{name}'")
            else:
                problems.append(f"parameter '{name}': {error['msg']} (got {error.get('input')!r})")
        allowed = ", ".join(model.model_fields)
        raise InvalidParams(
            f"Invalid {what} configuration: " + "; ".join(problems)
            + f". Valid parameters: {allowed}."
        ) from None


def airflow_params(model: type[BaseModel] = ContinuousTrainingParams) -> dict[str, Any]:
    """Typed Airflow Params (JSON schema per field) built from a pydantic model."""
    from airflow.sdk import Param

    schema = model.model_json_schema()
    params: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        prop = dict(schema["properties"][name])
        default = field.get_default(call_default_factory=True)
        if isinstance(default, date):
            default = default.isoformat()
        prop.pop("default", None)
        any_of = prop.pop("anyOf", None)
        if any_of:
            types = [option.get("type") for option in any_of]
            formats = [option["format"] for option in any_of if "format" in option]
            prop["type"] = types
            if formats:
                prop["format"] = formats[0]
        if "const" in prop:
            prop["enum"] = [prop.pop("const")]
        params[name] = Param(default, **prop)
    return params
