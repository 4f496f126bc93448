"""Train a candidate on a snapshot's training split and track everything in MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.snapshots import split
from ctcd.data.spec import DatasetSpec
from ctcd.tracking import EXPERIMENT, Tracking
from ctcd.training.evaluate import score
from ctcd.training.model import build_pipeline, log_model


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def train(
    tracking: Tracking,
    snapshot_path: Path,
    spec: DatasetSpec,
    *,
    model_type: str,
    hyperparameters: Mapping[str, Any],
    holdout_fraction: float,
    tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, Path] | None = None,
    experiment: str = EXPERIMENT,
) -> TrainResult:
    """Fit on the training split; log params, metrics, dataset lineage, ``artifacts`` (e.g.
    the validation of the data) and the model, in one MLflow run tagged with ``tags``."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    frame = pd.read_parquet(snapshot_path)
    train_set, holdout = split(frame, holdout_fraction, spec.id_column)
    features = list(spec.feature_names)
    pipeline = build_pipeline(
        model_type,
        hyperparameters,
        numeric=spec.numeric_features,
        categorical=spec.categorical_features,
    )
    with tracking.active():
        run = mlflow.start_run(experiment_id=tracking.experiment_id(experiment))
        try:
            mlflow.log_params(
                {
                    "dataset": spec.name,
                    "model_type": model_type,
                    "holdout_fraction": holdout_fraction,
                    "snapshot": str(snapshot_path),
                    "train_rows": len(train_set),
                    "holdout_rows": len(holdout),
                    **{f"hp.{k}": v for k, v in hyperparameters.items()},
                }
            )
            dataset = from_pandas(
                train_set,
                source=str(snapshot_path),
                name=f"{spec.name}/{snapshot_path.parent.name}",
                targets=spec.label.name,
            )
            mlflow.log_input(dataset, context="training")
            pipeline.fit(train_set[features], train_set[spec.label.name])
            metrics = {
                **{f"train_{k}": v for k, v in score(pipeline, train_set, spec).items()},
                **{f"holdout_{k}": v for k, v in score(pipeline, holdout, spec).items()},
            }
            mlflow.log_metrics(metrics)
            tracking.log_artifacts(run.info.run_id, artifacts or {})
            info = log_model(pipeline, train_set[features].head(5))
            # Tagged last: the watermark counts a partition as trained on only from here.
            mlflow.set_tags(dict(tags or {}))
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run()
    return TrainResult(run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics)
