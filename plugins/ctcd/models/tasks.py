"""The three kinds of model the project trains, and the metrics each is judged by.

A metric has a short name (what model files and run parameters say), the key MLflow's
evaluation logs it under, and a direction. The holdout metrics come from
``mlflow.models.evaluate`` (see ``ctcd.training.evaluate``); this table only names them,
so model files can be checked when Airflow parses them (no heavy imports here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Task = Literal["binary", "multiclass", "regression"]
TASKS: Final[tuple[Task, ...]] = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Metric:
    name: str
    mlflow_key: str
    greater_is_better: bool
    needs_proba: bool = False
    description: str = ""

    def better(self, value: float, than: float) -> bool:
        return value > than if self.greater_is_better else value < than

    def at_least(self, value: float, threshold: float) -> bool:
        """``value`` passes ``threshold`` (at or above it, or at or below for errors)."""
        return value >= threshold if self.greater_is_better else value <= threshold


METRICS: Final[dict[Task, dict[str, Metric]]] = {
    "binary": {
        m.name: m
        for m in (
            Metric("roc_auc", "roc_auc", True, True, "area under the ROC curve"),
            Metric("f1", "f1_score", True, description="F1 of the positive class"),
            Metric("precision", "precision_score", True, description="of the positive class"),
            Metric("recall", "recall_score", True, description="of the positive class"),
            Metric("accuracy", "accuracy_score", True, description="share of right labels"),
            Metric("log_loss", "log_loss", False, True, "cross-entropy of the probabilities"),
        )
    },
    "multiclass": {
        m.name: m
        for m in (
            Metric("f1_macro", "f1_score", True, description="F1 averaged over the classes"),
            Metric("accuracy", "accuracy_score", True, description="share of right labels"),
            Metric("log_loss", "log_loss", False, True, "cross-entropy of the probabilities"),
        )
    },
    "regression": {
        m.name: m
        for m in (
            Metric("rmse", "root_mean_squared_error", False, description="root mean squared error"),
            Metric("mae", "mean_absolute_error", False, description="mean absolute error"),
            Metric("r2", "r2_score", True, description="coefficient of determination"),
            Metric("mape", "mean_absolute_percentage_error", False,
                   description="mean absolute percentage error (a share: 0.1 = 10%)"),
        )
    },
}

DEFAULT_METRIC: Final[dict[Task, str]] = {
    "binary": "roc_auc",
    "multiclass": "f1_macro",
    "regression": "rmse",
}

# The metric live monitoring computes from delayed labels, per task.
LIVE_METRIC: Final[dict[Task, str]] = {
    "binary": "accuracy",
    "multiclass": "f1_macro",
    "regression": "rmse",
}


def metric(task: Task, name: str) -> Metric:
    """The metric ``name`` of ``task``; ValueError listing the valid ones."""
    try:
        return METRICS[task][name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a metric of {task} models; choose one of "
            f"{', '.join(METRICS[task])}"
        ) from None


def is_classifier(task: Task) -> bool:
    return task != "regression"
