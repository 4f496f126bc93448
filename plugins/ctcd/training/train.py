"""Train a candidate on the training rows of a snapshot window and track it in MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.spec import DatasetSpec
from ctcd.models.definition import ModelDefinition
from ctcd.tracking import EXPERIMENT, Tracking
from ctcd.training.params import ContinuousTrainingParams


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    flavor: str
    model: Any  # the fitted model, for the reference statistics; never leaves the step


def model_metadata(definition: ModelDefinition, spec: DatasetSpec) -> dict[str, Any]:
    """What the model server and batch scoring read from a logged model (MLmodel
    ``metadata.ctcd``): its task, the classes of a classifier, its data set."""
    return {
        "task": definition.resolved_task,
        "classes": list(spec.label.classes) if spec.label.classes else None,
        "dataset": spec.name,
        "label": spec.label.name,
        "model_file": definition.key,
    }


def train(
    tracking: Tracking,
    train_set: pd.DataFrame,
    definition: ModelDefinition,
    spec: DatasetSpec,
    params: ContinuousTrainingParams,
    *,
    snapshots: Sequence[str],
    holdout_rows: int,
    tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, Path] | None = None,
    experiment: str = EXPERIMENT,
) -> TrainResult:
    """Fit on ``train_set``; log params, dataset lineage, ``artifacts`` (e.g. the validation
    of the data) and the model with its flavor, in one MLflow run tagged with ``tags``
    (the watermark's tags go last, so a failed run never counts as trained on)."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from ctcd.training.flavors import log_fitted
    from ctcd.training.trainers import fit

    estimator = params.effective_estimator(definition)
    hyperparameters = params.effective_hyperparameters(definition)
    trainer = definition.trainer.function or estimator
    with tracking.active():
        run = mlflow.start_run(experiment_id=tracking.experiment_id(experiment),
                               run_name=f"{definition.model_name}-{Path(snapshots[-1]).parent.name}")
        try:
            mlflow.log_params(
                {
                    "model_file": definition.key,
                    "dataset": spec.name,
                    "task": definition.resolved_task,
                    "trainer": trainer,
                    "seed": params.seed,
                    "holdout_fraction": params.holdout_fraction,
                    "snapshot": snapshots[-1],
                    "window_partitions": len(snapshots),
                    "train_rows": len(train_set),
                    "holdout_rows": holdout_rows,
                    **{f"hp.{k}": v for k, v in hyperparameters.items()},
                }
            )
            if params.trigger_reason:
                mlflow.set_tag("ctcd.trigger_reason", params.trigger_reason[:5000])
            first, last = Path(snapshots[0]).parent.name, Path(snapshots[-1]).parent.name
            window = first if first == last else f"{first}..{last}"
            mlflow.log_input(
                from_pandas(train_set, source=snapshots[-1], name=f"{spec.name}/{window}",
                            targets=spec.label.name),
                context="training",
            )
            fitted = fit(definition, spec, train_set, estimator=estimator,
                         hyperparameters=hyperparameters, seed=params.seed)
            tracking.log_artifacts(run.info.run_id, artifacts or {})
            info = log_fitted(
                fitted.model,
                train_set[list(spec.feature_names)].head(5).reset_index(drop=True),
                metadata=model_metadata(definition, spec),
                code_paths=fitted.code_paths,
            )
            flavor = str(info.metadata["ctcd"]["flavor"]) if info.metadata else "sklearn"
            mlflow.set_tags({"ctcd.flavor": flavor, "ctcd.model_file": definition.key,
                             "ctcd.model": definition.model_name})
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run()
    return TrainResult(run_id=run.info.run_id, model_uri=info.model_uri, flavor=flavor,
                       model=fitted.model)


def finish(tracking: Tracking, run_id: str, tags: Mapping[str, str]) -> None:
    """Tag the run as trained on its partitions: the watermark counts it from here."""
    for key, value in tags.items():
        tracking.client.set_tag(run_id, key, value)
