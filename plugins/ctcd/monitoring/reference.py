"""Reference statistics: what the features and the predictions looked like at training
time, small enough to log with the model so monitoring never re-reads the training data.

The document (JSON, ``reference/statistics.json`` in the training run's artifacts)::

    {"format": "ctcd.reference/1", "dataset": "churn", "rows": 16000,
     "features": {
        "<numeric>": {"kind": "numeric", "count", "nulls", "mean", "std", "min", "max",
                      "edges": [...],        # bin edges (deciles of the training values)
                      "shares": [...],       # share of values per bin (len(edges) + 1)
                      "sketch": [...]},      # 1,000 quantiles: the sample KS and
                                             # Wasserstein compare served values with
        "<categorical>": {"kind": "categorical", "count", "nulls",
                          "shares": {"<category>": share, ...}}},
     "predictions": {"kind": "class", "count", "shares": {"0": 0.72, "1": 0.28},
                     "holdout_accuracy": 0.81}}        # or kind "numeric" for scores

Bins: value ``v`` falls in bin ``i`` when ``edges[i-1] < v <= edges[i]`` (bin 0 takes
everything up to the first edge, the last bin everything above the last one), so served
values outside the training range land in the outer bins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ctcd.errors import CtcdError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from ctcd.data.spec import DatasetSpec

FORMAT = "ctcd.reference/1"
ARTIFACT_DIR = "reference"
ARTIFACT_FILE = "statistics.json"
ARTIFACT_PATH = f"{ARTIFACT_DIR}/{ARTIFACT_FILE}"
BINS = 10
SKETCH_POINTS = 1000
# Predictions with at most this many distinct values are treated as classes.
MAX_CLASSES = 20


class ReferenceNotFound(CtcdError):
    """The model version has no reference statistics to compare served traffic with."""

    status_code = 404


def numeric_reference(values: Any, bins: int = BINS) -> dict[str, Any]:
    """Bin edges at the deciles, the share per bin, moments and a quantile sketch."""
    array = np.asarray(values, dtype="float64")
    present = array[~np.isnan(array)]
    doc: dict[str, Any] = {"kind": "numeric", "count": int(array.size),
                           "nulls": int(array.size - present.size)}
    if present.size == 0:
        return {**doc, "mean": None, "std": None, "min": None, "max": None,
                "edges": [], "shares": [], "sketch": []}
    edges = np.unique(_floats(np.quantile(present, np.linspace(0.0, 1.0, bins + 1))))
    counts = np.bincount(bin_index(present, edges), minlength=edges.size + 1)
    points = (np.arange(SKETCH_POINTS) + 0.5) / SKETCH_POINTS
    return {
        **doc,
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "edges": edges.tolist(),
        "shares": _floats(counts / present.size),
        "sketch": _floats(np.quantile(present, points)),
    }


def categorical_reference(values: Any, categories: Sequence[str] = ()) -> dict[str, Any]:
    """Share of each category; the spec's categories appear even when absent (share 0)."""
    import pandas as pd

    series = pd.Series(values, dtype="object")
    present = series.dropna().map(label)
    shares = {str(c): 0.0 for c in categories}
    if len(present):
        shares.update({str(k): float(v) for k, v in present.value_counts(normalize=True).items()})
    return {"kind": "categorical", "count": int(series.size),
            "nulls": int(series.size - present.size), "shares": shares}


def prediction_reference(predictions: Any, labels: Any = None,
                         task: str | None = None) -> dict[str, Any]:
    """Class shares (a classifier's labels) or a numeric profile (a regression's values, or
    scores) of model output. Without ``task`` few distinct whole values count as classes.
    With ``labels``, the holdout value of the task's live metric (``holdout_metric``;
    ``holdout_accuracy`` too for classifiers), which live metrics are compared with."""
    from ctcd.models.tasks import LIVE_METRIC
    from ctcd.monitoring.labels import live_metric

    flat = flatten_predictions(predictions)
    classes = is_classes(flat) if task is None else task != "regression"
    doc = categorical_reference(flat) if classes else numeric_reference(flat)
    if task is not None:
        doc["task"] = task
    if labels is None:
        return doc
    truth = np.asarray(labels).tolist()
    if doc["kind"] == "categorical":
        pairs = [(label(t), label(g)) for t, g in zip(truth, flat.tolist(), strict=True)]
        doc["holdout_accuracy"] = (sum(t == g for t, g in pairs) / len(pairs)) if pairs else None
    if task is not None:
        value, _ = live_metric(task, [label(v) for v in truth], flat.tolist())
        doc["holdout_metric"] = {"name": LIVE_METRIC[task], "value": value}  # type: ignore[index]
    return doc


def build_reference(
    features: pd.DataFrame,
    spec: DatasetSpec,
    predictions: Any,
    labels: Any = None,
    task: str | None = None,
) -> dict[str, Any]:
    """The reference document of a model trained on ``features``.

    ``predictions`` is the model's output on held-out rows (what it says about data it did
    not see, as served traffic will be) and ``labels`` their truth, for the accuracy live
    accuracy is compared with.
    """
    missing = [name for name in spec.feature_names if name not in features.columns]
    if missing:
        raise CtcdError(f"cannot build reference statistics: columns {missing} of data set "
                        f"{spec.name!r} are not in the training frame")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "dataset": spec.name,
        "created_at": datetime.now(UTC).isoformat(),
        "rows": len(features),
        "features": {},
        "predictions": prediction_reference(predictions, labels, task),
    }
    for feature in spec.features:
        column = features[feature.name]
        doc["features"][feature.name] = (
            numeric_reference(column.to_numpy(dtype="float64", na_value=np.nan))
            if feature.is_numeric
            else categorical_reference(column.to_numpy(dtype=object), feature.categories or ())
        )
    return doc


def log_training_reference(
    run_id: str,
    model: Any,
    train_set: pd.DataFrame,
    holdout: pd.DataFrame,
    spec: DatasetSpec,
    *,
    task: str | None = None,
    client: MlflowClient | None = None,
) -> dict[str, Any]:
    """Build the reference of a fitted ``model`` and log it to the training run."""
    rows = holdout[list(spec.feature_names)]
    document = build_reference(train_set, spec, model.predict(rows), holdout[spec.label.name],
                               task)
    log_reference(run_id, document, client=client)
    return document


def log_reference(run_id: str, document: Mapping[str, Any], *,
                  client: MlflowClient | None = None) -> None:
    from mlflow import MlflowClient

    (client or MlflowClient()).log_dict(run_id, dict(document), ARTIFACT_PATH)


def load_reference(run_id: str, *, client: MlflowClient) -> dict[str, Any]:
    """The reference logged with a training run; ReferenceNotFound if it has none."""
    import tempfile
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ctcd-reference-") as tmp:
        try:
            local = client.download_artifacts(run_id, ARTIFACT_PATH, tmp)
        except (MlflowException, OSError) as err:
            raise ReferenceNotFound(
                f"Run {run_id} has no {ARTIFACT_PATH}: the model was trained before reference "
                "statistics were logged. Retrain it with its training DAG to monitor it."
            ) from err
        document: dict[str, Any] = json.loads(Path(local).read_text())
    if document.get("format") != FORMAT:
        raise ReferenceNotFound(
            f"Run {run_id}'s {ARTIFACT_PATH} has format {document.get('format')!r}; this "
            f"version of ctcd reads {FORMAT!r}. Retrain the model to refresh it."
        )
    return document


# -- shared by the reference and the served side ---------------------------------------------


def bin_index(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bin of each value: ``edges[i-1] < v <= edges[i]`` is bin ``i``."""
    return np.searchsorted(np.asarray(edges, dtype="float64"), values, side="left")


def label(value: Any) -> str:
    """A category or class as text; integral floats as integers (``1.0`` -> ``"1"``)."""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def flatten_predictions(predictions: Any) -> np.ndarray:
    """One value per row: records -> their first field, rows of scores -> the last column
    (the positive class of a binary classifier's probabilities)."""
    if hasattr(predictions, "to_numpy"):
        predictions = predictions.to_numpy()
    values = list(predictions) if not isinstance(predictions, np.ndarray) else predictions
    if isinstance(values, np.ndarray):
        return values[:, -1] if values.ndim == 2 else values.reshape(-1)
    flat = [_one_value(v) for v in values]
    return np.asarray(flat, dtype=object if any(isinstance(v, str) for v in flat) else None)


def is_classes(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    if values.dtype.kind in "biuOUS":
        return True
    finite = values[~np.isnan(values.astype("float64"))]
    return bool(np.all(np.mod(finite, 1) == 0)) and np.unique(finite).size <= MAX_CLASSES


def _one_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return next(iter(value.values()), None)
    if isinstance(value, list | tuple):
        return value[-1] if value else None
    return value


def _floats(array: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(array, dtype="float64").tolist()]
