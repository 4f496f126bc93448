"""Train a candidate on a snapshot's training split and track everything in MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas

from ctcd.data.churn import FEATURES, LABEL
from ctcd.data.snapshots import split
from ctcd.training.evaluate import score
from ctcd.training.model import build_pipeline, log_model


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def train(
    snapshot_path: Path,
    *,
    experiment: str,
    model_type: str,
    hyperparameters: Mapping[str, Any],
    holdout_fraction: float,
    tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Fit on the training split, log params, metrics, dataset lineage and the model."""
    frame = pd.read_parquet(snapshot_path)
    train_set, holdout = split(frame, holdout_fraction)
    pipeline = build_pipeline(model_type, hyperparameters)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags=dict(tags or {})) as run:
        mlflow.log_params(
            {
                "model_type": model_type,
                "holdout_fraction": holdout_fraction,
                "snapshot": str(snapshot_path),
                "train_rows": len(train_set),
                "holdout_rows": len(holdout),
                **{f"hp.{k}": v for k, v in hyperparameters.items()},
            }
        )
        dataset = from_pandas(
            train_set, source=str(snapshot_path), name=snapshot_path.parent.name, targets=LABEL
        )
        mlflow.log_input(dataset, context="training")
        pipeline.fit(train_set[list(FEATURES)], train_set[LABEL])
        metrics = {
            **{f"train_{k}": v for k, v in score(pipeline, train_set).items()},
            **{f"holdout_{k}": v for k, v in score(pipeline, holdout).items()},
        }
        mlflow.log_metrics(metrics)
        info = log_model(pipeline, train_set[list(FEATURES)].head(5))
        # Monitoring hook: reference statistics of the features and predictions, logged with
        # the model (reference/statistics.json) so drift checks never re-read training data.
        from ctcd.data.spec import load_spec
        from ctcd.monitoring.reference import log_training_reference

        log_training_reference(run.info.run_id, pipeline, train_set, holdout, load_spec("churn"))
    return TrainResult(run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics)
