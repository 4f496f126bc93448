"""Score models on a holdout, the candidate and the serving champion on the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from ctcd.data.churn import FEATURES, LABEL
from ctcd.data.snapshots import split


class Classifier(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def score(model: Classifier, holdout: pd.DataFrame) -> dict[str, float]:
    """Metrics of a model on labelled rows. ROC AUC uses probabilities where the model has them."""
    features, labels = holdout[list(FEATURES)], holdout[LABEL]
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


def _load_sklearn(model_uri: str) -> Classifier:
    return mlflow.sklearn.load_model(model_uri)  # type: ignore[no-any-return]


def compare_with_champion(
    candidate_uri: str,
    snapshot_path: Path,
    holdout_fraction: float,
    *,
    model_name: str,
    champion_alias: str = "champion",
) -> Comparison:
    """Evaluate the candidate and the current champion (if there is one) on the same holdout."""
    _, holdout = split(pd.read_parquet(snapshot_path), holdout_fraction)
    candidate = score(_load_sklearn(candidate_uri), holdout)
    client = mlflow.MlflowClient()
    try:
        champion_mv = client.get_model_version_by_alias(model_name, champion_alias)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(err).lower():
            raise
        return Comparison(candidate=candidate, champion=None, champion_version=None)
    champion = score(_load_sklearn(f"models:/{model_name}/{champion_mv.version}"), holdout)
    return Comparison(
        candidate=candidate, champion=champion, champion_version=str(champion_mv.version)
    )
