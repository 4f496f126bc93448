"""Score the candidate and the serving champion on the same holdout rows, with MLflow's
own evaluation (``mlflow.models.evaluate``): the candidate's metrics and plots (confusion
matrix, ROC and precision-recall curves for classifiers; a residual plot for regressions)
go to its training run, the champion's to a child run of it, so both sit side by side in
the MLflow UI. The gate (``ctcd.training.gate``) reads the task's metrics from the result.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ctcd.data.spec import DatasetSpec
from ctcd.models.tasks import METRICS, Task, is_classifier
from ctcd.tracking import CHAMPION, Tracking

PREFIX = "holdout_"


@dataclass(frozen=True)
class Comparison:
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None


def evaluator_config(task: Task, classes: Sequence[Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {"log_model_explainability": False, "metric_prefix": PREFIX}
    if is_classifier(task) and classes:
        config["label_list"] = list(classes)
        if task == "binary":
            config["pos_label"] = list(classes)[-1]  # the spec's last class is the positive one
        else:
            config["average"] = "macro"
    return config


def holdout_metrics(
    model_uri: str, holdout: pd.DataFrame, spec: DatasetSpec, task: Task,
) -> dict[str, float]:
    """Evaluate ``model_uri`` on ``holdout`` inside the active MLflow run (its metrics and
    plots are logged there); the task's metrics by their short names."""
    import mlflow

    data = holdout[[*spec.feature_names, spec.label.name]]
    with _quiet():
        result = mlflow.models.evaluate(
            model_uri,
            data,
            targets=spec.label.name,
            model_type="classifier" if is_classifier(task) else "regressor",
            evaluators="default",
            evaluator_config=evaluator_config(task, spec.label.classes),
            extra_metrics=None,
            custom_artifacts=[_residual_plot] if task == "regression" else None,
        )
    found = {}
    for name, metric in METRICS[task].items():
        value = result.metrics.get(PREFIX + metric.mlflow_key)
        if value is not None:
            found[name] = float(value)
    return found


def compare_with_champion(
    tracking: Tracking,
    candidate_uri: str,
    candidate_run_id: str,
    holdout: pd.DataFrame,
    spec: DatasetSpec,
    task: Task,
    *,
    model_name: str,
) -> Comparison:
    """Evaluate the candidate and the current champion (if there is one) on the same rows."""
    import mlflow

    with tracking.active(), mlflow.start_run(run_id=candidate_run_id):
        candidate = holdout_metrics(candidate_uri, holdout, spec, task)
        version = tracking.alias_version(model_name, CHAMPION)
        if version is None:
            return Comparison(candidate=candidate, champion=None, champion_version=None)
        with mlflow.start_run(run_name=f"champion-v{version}-on-this-holdout", nested=True):
            mlflow.set_tag("ctcd.stage", "champion_evaluation")
            champion = holdout_metrics(f"models:/{model_name}/{version}", holdout, spec, task)
    return Comparison(candidate=candidate, champion=champion, champion_version=version)


def _residual_plot(eval_df: pd.DataFrame, _metrics: dict[str, float],
                   artifacts_dir: str) -> dict[str, str]:
    """Predictions against their errors, for a regression (MLflow logs no such plot)."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    residuals = eval_df["target"] - eval_df["prediction"]
    axis.scatter(eval_df["prediction"], residuals, s=6, alpha=0.5)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("prediction")
    axis.set_ylabel("target - prediction")
    axis.set_title("Residuals on the holdout")
    path = Path(artifacts_dir) / "residuals.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"residual_plot": str(path)}


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's evaluation narrates each step at INFO and warns about what it infers;
    the task log should show the metrics, not that."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
