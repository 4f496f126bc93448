"""The ``xgboost`` flavor: a model loaded as ``mlflow.xgboost`` loads it, called as its
pyfunc calls it.

The model class ``MLmodel`` names (``xgboost.sklearn.XGBClassifier``, ...) is created
empty and given the saved file (``load_model``), as MLflow does. Its pyfunc calls
``predict(frame, validate_features=True)`` on a scikit-learn API model and
``predict(DMatrix(frame), validate_features=True)`` on a ``Booster``; so does the server, on
the checked frame. Category columns arrive as text (the signature's ``string``) and are
turned into pandas Categoricals first: with the categories of ``metadata.ctcd.categories``,
the exact dtype the model was trained on, or for a model logged without them, those the
model marks categorical (``feature_types`` ``"c"``), whose own categories XGBoost uses
to re-code the values.

Array path (all columns numbers of one dtype, the model's features exactly the
signature's): the scikit-learn API's ``predict(ndarray, validate_features=False)``, and a
Booster's ``inplace_predict``, without the DataFrame conversion XGBoost does per call.

A model whose signature declares ``params`` goes through pyfunc: MLflow passes those to
XGBoost's ``predict``. Threads: the saved model keeps no thread count, so each predict uses
the OpenMP threads of the calling thread, which the server sets (``--threads``).
"""

from __future__ import annotations

import importlib
import json
import logging
from functools import partial
from typing import Any

import numpy as np

from ctcd.serving.flavors import (
    ArrayCalls,
    Call,
    NativeModel,
    Source,
    Task,
    array_ready,
    categorical,
    plain,
    single_threaded,
    task_from_classes,
    then,
    two_columns,
    with_input,
)

log = logging.getLogger(__name__)


def load(source: Source) -> NativeModel | None:
    import xgboost as xgb

    if (source.meta.get("signature") or {}).get("params"):
        return None
    model_class = str(source.conf.get("model_class") or "xgboost.core.Booster")
    module, _, name = model_class.rpartition(".")
    if module.split(".")[0] != "xgboost":
        return None  # a user's subclass: its module is the pyfunc's to import
    saved = source.conf.get("xgb_version")
    if saved and saved != xgb.__version__:
        log.warning("%s was saved with XGBoost %s; serving it with %s", source.uri, saved,
                    xgb.__version__)
    try:
        model = getattr(importlib.import_module(module), name)()
        with single_threaded():
            model.load_model(str(source.data_path()))
    except (OSError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise source.failed(err) from err
    booster = model if isinstance(model, xgb.Booster) else model.get_booster()
    prepare = categorical(_categories(source, booster))
    if isinstance(model, xgb.Booster):
        return _booster(model, source, prepare)
    classes = getattr(model, "classes_", None) if isinstance(model, xgb.XGBClassifier) else None
    task: Task | None = task_from_classes(classes)
    if task is None and isinstance(model, xgb.XGBRegressor):
        task = "regression"
    proba = None
    if classes is not None and model.objective != "multi:softmax":  # softmax has no probabilities
        proba = partial(model.predict_proba, validate_features=True)
    arrays = None
    if prepare is None and array_ready(source.schema, booster.feature_names):
        arrays = ArrayCalls(partial(model.predict, validate_features=False),
                            partial(model.predict_proba, validate_features=False)
                            if proba is not None else None)
    return NativeModel(model=model,
                       predict=with_input(prepare, partial(model.predict, validate_features=True)),
                       predict_proba=with_input(prepare, proba) if proba is not None else None,
                       classes=plain(classes), task=task, arrays=arrays)


def _booster(model: Any, source: Source, prepare: Call | None) -> NativeModel:
    import xgboost as xgb

    config = json.loads(model.save_config())["learner"]
    objective = str(config["objective"]["name"])
    num_class = int(config["learner_model_param"].get("num_class", "0") or 0)
    task: Task | None = None
    proba: Call | None = None
    if objective.startswith("binary:"):
        task = "binary"
        if objective == "binary:logistic":
            proba = two_columns
    elif objective.startswith("multi:"):
        task = "multiclass"
        if objective == "multi:softprob":
            proba = np.asarray
    elif objective.startswith(("reg:", "count:", "survival:")):
        task = "regression"
    categories = prepare is not None

    def predict(frame: Any) -> Any:
        data = prepare(frame) if prepare is not None else frame
        return model.predict(xgb.DMatrix(data, enable_categorical=categories),
                             validate_features=True)

    arrays = None
    if not categories and array_ready(source.schema, model.feature_names):
        inplace = partial(model.inplace_predict, validate_features=False)
        arrays = ArrayCalls(inplace, then(inplace, proba) if proba is not None else None)
    classes: tuple[int, ...] | None = None
    if task == "binary":
        classes = (0, 1)
    elif task == "multiclass" and num_class:
        classes = tuple(range(num_class))
    return NativeModel(model=model, predict=predict,
                       predict_proba=then(predict, proba) if proba is not None else None,
                       classes=classes if proba is not None else None, task=task,
                       arrays=arrays)


def _categories(source: Source, booster: Any) -> dict[str, list[Any] | None]:
    """Category columns and their categories: the project's metadata, else the columns the
    model marks categorical (XGBoost re-codes their values by its own categories)."""
    named = source.project.get("categories")
    if isinstance(named, dict) and named:
        return {str(c): list(v) for c, v in named.items() if c in source.schema.by_name}
    types = booster.feature_types or ()
    names = booster.feature_names or ()
    return {str(n): None for n, t in zip(names, types, strict=False)
            if t == "c" and n in source.schema.by_name}

