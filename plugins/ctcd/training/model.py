"""The built-in trainer's model: the data set's preprocessing and an estimator, and how a
scikit-learn model is logged to MLflow (skops format).

An estimator is a shortcut (``hist_gradient_boosting``, ``random_forest``,
``logistic_regression``, ``ridge``: the classifier or the regressor, as the task needs) or
the dotted class path of any scikit-learn-compatible estimator (``xgboost.XGBClassifier``,
``sklearn.svm.SVR``, ``my_models.estimators.Mine``). It goes behind the spec's
preprocessing (numbers scaled, categories one-hot encoded) in one pipeline, except an
XGBoost or LightGBM model on numeric features only: scaling changes no tree's answer, so
the bare model is fitted and logged with its own MLflow flavor, which serves natively.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any, Final

import mlflow
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ctcd.models.tasks import Task, is_classifier

# shortcut -> (classifier, regressor); a regressor of None: no such regressor.
SHORTCUTS: Final[dict[str, tuple[str, str | None]]] = {
    "hist_gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier",
                               "sklearn.ensemble.HistGradientBoostingRegressor"),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier",
                      "sklearn.ensemble.RandomForestRegressor"),
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", None),
    "ridge": ("sklearn.linear_model.RidgeClassifier", "sklearn.linear_model.Ridge"),
}
ESTIMATORS: Final = tuple(SHORTCUTS)
DEFAULT_ESTIMATOR: Final = "hist_gradient_boosting"
# Defaults of a shortcut used without hyperparameters.
DEFAULT_HYPERPARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "hist_gradient_boosting": {"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31},
    "random_forest": {"n_estimators": 100, "max_depth": 12, "n_jobs": 1},
    "logistic_regression": {"C": 1.0, "max_iter": 500},
    "ridge": {"alpha": 1.0},
}
# Tree libraries whose bare models need no preprocessing on numeric features.
NATIVE_TREE_MODULES: Final = ("xgboost", "lightgbm")


def estimator_class(estimator: str, task: Task = "binary") -> type:
    """The class a shortcut or a dotted path names; ValueError saying what is wrong."""
    path = estimator
    if estimator in SHORTCUTS:
        classifier, regressor = SHORTCUTS[estimator]
        path = classifier if is_classifier(task) else regressor or ""
        if not path:
            raise ValueError(f"{estimator} is a classifier only; for a regression choose one of "
                             f"{[k for k, (_, r) in SHORTCUTS.items() if r]} or a dotted path")
    elif "." not in estimator and ":" not in estimator:
        raise ValueError(f"unknown estimator {estimator!r}: use one of {list(SHORTCUTS)} or a "
                         "dotted class path such as xgboost.XGBClassifier")
    module_name, _, name = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"estimator {estimator!r}: cannot import {module_name!r} ({err}); "
                         "install the package on the Airflow workers") from err
    found = getattr(module, name, None)
    if not isinstance(found, type) or not hasattr(found, "fit"):
        raise ValueError(f"estimator {estimator!r}: {module_name} has no estimator class "
                         f"{name!r}")
    return found


def make_estimator(
    estimator: str, hyperparameters: Mapping[str, Any], *, task: Task = "binary",
    seed: int | None = None,
) -> Any:
    """An unfitted estimator; ValueError naming a bad hyperparameter. ``seed`` becomes its
    ``random_state`` where it has one and the hyperparameters do not set it."""
    cls = estimator_class(estimator, task)
    params = dict(hyperparameters or DEFAULT_HYPERPARAMETERS.get(estimator, {}))
    try:
        valid = cls().get_params()
    except Exception as err:  # a class that cannot be built without arguments
        raise ValueError(f"estimator {estimator!r} cannot be built without arguments: {err}"
                         ) from err
    accepts_any = "kwargs" in valid or cls.__module__.split(".")[0] in NATIVE_TREE_MODULES
    unknown = sorted(set(params) - set(valid))
    if unknown and not accepts_any:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for {estimator}; valid ones are "
                         f"{sorted(valid)}")
    if seed is not None and "random_state" in valid and "random_state" not in params:
        params["random_state"] = seed
    try:
        built = cls(**params)
    except TypeError as err:
        raise ValueError(f"invalid hyperparameters for {estimator}: {err}") from None
    checker = getattr(built, "_validate_params", None)
    if callable(checker) and cls.__module__.startswith("sklearn."):
        try:
            checker()  # scikit-learn's own type/range checks, before any fit
        except (TypeError, ValueError) as err:
            raise ValueError(f"invalid hyperparameter for {estimator}: {err}") from None
    return built


def is_native_tree(model: Any) -> bool:
    return type(model).__module__.split(".")[0] in NATIVE_TREE_MODULES


def build_pipeline(
    estimator: str | Any,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    numeric: tuple[str, ...] | None = None,
    categorical: tuple[str, ...] | None = None,
    task: Task = "binary",
    seed: int | None = None,
) -> Any:
    """The data set's preprocessing and the estimator in one pipeline (or, for an XGBoost or
    LightGBM model on numeric columns only, the bare model); ValueError naming a bad
    hyperparameter.

    ``numeric`` and ``categorical`` name the columns (from the data set's spec); left out,
    columns are told apart by dtype (numbers scaled, everything else one-hot encoded).
    """
    model = (make_estimator(estimator, hyperparameters or {}, task=task, seed=seed)
             if isinstance(estimator, str) else estimator)
    if is_native_tree(model) and numeric is not None and not categorical:
        return model
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
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", model)])


def log_model(
    pipeline: Any,
    input_example: pd.DataFrame,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    code_paths: list[str] | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log a fitted scikit-learn model with signature and input example, in skops format.

    skops refuses to load types it does not trust; the model was fitted here, so every
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
    with warnings.catch_warnings():
        # MLflow serializes with skops again: the same lookups, the same noise.
        warnings.filterwarnings("ignore", module=r"skops\.")
        return mlflow.sklearn.log_model(
            pipeline,
            name=name,
            signature=signature,
            input_example=input_example,
            serialization_format="skops",
            pip_requirements=pip_requirements("scikit-learn", "skops"),
            skops_trusted_types=trusted,
            registered_model_name=registered_model_name,
            metadata=dict(metadata) if metadata else None,
            code_paths=code_paths,
        )


def pip_requirements(*packages: str) -> list[str]:
    """Pinned requirements of a logged model, stated rather than inferred (inference is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for pkg in ("mlflow", *packages, "pandas"):
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return pins
