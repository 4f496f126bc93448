"""Score models on a holdout, the candidate and the serving champion on the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from ctcd.data.snapshots import split
from ctcd.data.spec import DatasetSpec
from ctcd.tracking import CHAMPION, Tracking


class Classifier(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def score(model: Classifier, holdout: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """Metrics of a model on labelled rows. ROC AUC uses probabilities where the model has them."""
    features, labels = holdout[list(spec.feature_names)], holdout[spec.label.name]
    predicted = np.asarray(model.predict(features)).astype(int)
    proba = getattr(model, "predict_proba", None)
    ranking = proba(features)[:, 1] if proba is not None else predicted
    return {
        "roc_auc": float(roc_auc_score(labels, ranking)),
        "f1": float(f1_score(labels, predicted)),
        "accuracy": float(accuracy_score(labels, predicted)),
    }


@dataclass(frozen=True)
class Comparison:
    candidate: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None


def load_sklearn(tracking: Tracking, model_uri: str) -> Classifier:
    import mlflow

    with tracking.active():
        return mlflow.sklearn.load_model(model_uri)  # type: ignore[no-any-return]


def compare_with_champion(
    tracking: Tracking,
    candidate_uri: str,
    snapshot_path: Path,
    spec: DatasetSpec,
    holdout_fraction: float,
    *,
    model_name: str,
) -> Comparison:
    """Evaluate the candidate and the current champion (if there is one) on the same holdout."""
    _, holdout = split(pd.read_parquet(snapshot_path), holdout_fraction, spec.id_column)
    candidate = score(load_sklearn(tracking, candidate_uri), holdout, spec)
    version = tracking.alias_version(model_name, CHAMPION)
    if version is None:
        return Comparison(candidate=candidate, champion=None, champion_version=None)
    champion = score(load_sklearn(tracking, f"models:/{model_name}/{version}"), holdout, spec)
    return Comparison(candidate=candidate, champion=champion, champion_version=version)
