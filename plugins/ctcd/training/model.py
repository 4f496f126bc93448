"""Build the scikit-learn pipeline and log it to MLflow as a servable model."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

import mlflow
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

ESTIMATORS: Final[dict[str, type]] = {
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
    "logistic_regression": LogisticRegression,
}


def build_pipeline(
    model_type: str,
    hyperparameters: Mapping[str, Any],
    *,
    numeric: tuple[str, ...] | None = None,
    categorical: tuple[str, ...] | None = None,
) -> Pipeline:
    """A preprocessing + estimator pipeline; raises ValueError naming a bad hyperparameter.

    ``numeric`` and ``categorical`` name the columns (from the data set's spec); left out,
    columns are told apart by dtype (numbers scaled, everything else one-hot encoded).
    """
    try:
        estimator_cls = ESTIMATORS[model_type]
    except KeyError:
        raise ValueError(
            f"model_type must be one of {sorted(ESTIMATORS)}, got {model_type!r}"
        ) from None
    valid = estimator_cls().get_params()
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for {model_type}; valid ones are {sorted(valid)}"
        )
    estimator = estimator_cls(**hyperparameters)
    try:
        estimator._validate_params()  # scikit-learn's own type/range checks, before any fit
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid hyperparameter for {model_type}: {err}") from None
    transformers: list[tuple[str, Any, Any]] = []
    if numeric is None and categorical is None:
        transformers = [
            ("numeric", StandardScaler(), make_column_selector(dtype_include="number")),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_exclude="number"),
            ),
        ]
    if numeric:
        transformers.append(("numeric", StandardScaler(), list(numeric)))
    if categorical:
        transformers.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(categorical))
        )
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def log_model(
    pipeline: Pipeline,
    input_example: pd.DataFrame,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log a fitted pipeline with signature and input example, in skops format.

    skops refuses to load types it does not trust; the pipeline was built here, so every
    type it contains is trusted explicitly (tree models need ``sklearn.tree._tree.Tree``).
    """
    with warnings.catch_warnings():
        # skops looks objects up in every loaded module, which trips each deprecated
        # Airflow alias; and MLflow hints that integer columns cannot hold NaN, which is
        # the contract we want (validation rejects nulls before training).
        warnings.simplefilter("ignore")
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
        predictions = pipeline.predict(input_example)
        signature = infer_signature(input_example, predictions)
    return mlflow.sklearn.log_model(
        pipeline,
        name=name,
        signature=signature,
        input_example=input_example,
        serialization_format="skops",
        pip_requirements=_pip_requirements(),
        skops_trusted_types=trusted,
        registered_model_name=registered_model_name,
    )


def _pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, stated rather than inferred (inference is slow)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "pandas")]
