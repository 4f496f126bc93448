"""The ``lightgbm`` flavor: a model loaded as ``mlflow.lightgbm`` loads it, called as its
pyfunc calls it.

A ``Booster`` comes from its text file; a scikit-learn API model (``LGBMClassifier``,
``LGBMRegressor``, ...) is deserialized like a scikit-learn model, in its
``serialization_format`` under the same rules (:func:`ctcd.serving.flavors.sklearn.deserialize`).
The pyfunc calls ``predict(frame)``; so does the server, on the checked frame, after turning
category columns (text in the signature) into pandas Categoricals: with the categories of
``metadata.ctcd.categories``, or for a model logged without them, the categories LightGBM
saved with the model (``pandas_categorical``, in the order of the category columns, which
are the signature's text columns).

Threads: the scikit-learn API would predict on every core (``n_jobs``); the server passes
``num_threads=0``, LightGBM's "OpenMP default", which is the calling thread's, set by the
server (``--threads``). Thread counts do not change answers.

Array path (all columns numbers of one dtype, no category column, the model's features the
signature's): the Booster's ``predict(ndarray)``, and for the scikit-learn API the same
Booster call with the wrapper's own post-processing (two columns of probabilities for a
binary classifier, labels by ``classes_[argmax]``). The wrapper's per-call work (its
parameters, deep-copied on every call, and the DataFrame conversion) costs ten times a
small predict. Not for a custom objective or a model whose parameters change predictions
(``pred_early_stop``, ``predict_*``, ...).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Final

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

_REGRESSION: Final = frozenset({
    "regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma",
    "tweedie", "cross_entropy", "cross_entropy_lambda"})
_MULTICLASS: Final = frozenset({"multiclass", "multiclassova"})
_UNNAMED: Final = re.compile(r"^Column_\d+$")  # LightGBM's names for unnamed features
# parameters that change what a predict answers (and their aliases' stems)
_PREDICT_PARAMS: Final = re.compile(r"^(pred|predict|is_predict)_|^(raw_score|leaf_index|contrib)$"
                                    r"|_predict$")


def load(source: Source) -> NativeModel | None:
    import lightgbm as lgb

    model_class = str(source.conf.get("model_class") or "lightgbm.basic.Booster")
    if model_class.split(".")[0] != "lightgbm":
        return None  # a user's subclass: its module is the pyfunc's to import
    path = source.data_path()
    if model_class == "lightgbm.basic.Booster":
        try:
            with single_threaded():
                booster = lgb.Booster(model_file=str(path))
        except (OSError, ValueError, lgb.basic.LightGBMError) as err:
            raise source.failed(err) from err
        return _booster(booster, source)
    from ctcd.serving.flavors.sklearn import deserialize

    with single_threaded():  # the pickled model holds its Booster as text, parsed here
        model = deserialize(source.uri, path,
                            str(source.conf.get("serialization_format") or "cloudpickle"),
                            source.conf.get("skops_trusted_types"))
    if not isinstance(model, lgb.LGBMModel):
        return None
    booster = model.booster_
    prepare = categorical(_categories(source, booster))
    classes = getattr(model, "classes_", None) if isinstance(model, lgb.LGBMClassifier) else None
    task: Task | None = task_from_classes(classes)
    if task is None and isinstance(model, lgb.LGBMRegressor):
        task = "regression"
    proba = partial(model.predict_proba, num_threads=0) if classes is not None else None
    return NativeModel(
        model=model, predict=with_input(prepare, partial(model.predict, num_threads=0)),
        predict_proba=with_input(prepare, proba) if proba is not None else None,
        classes=plain(classes), task=task,
        arrays=_sklearn_arrays(model, classes) if _arrays_ok(source, booster, prepare, model)
        else None)


def _booster(booster: Any, source: Source) -> NativeModel:
    objective = str(booster.params.get("objective", "")).split(" ")[0]
    prepare = categorical(_categories(source, booster))
    task: Task | None = None
    proba: Call | None = None
    classes: tuple[Any, ...] | None = None
    if objective == "binary":
        task, proba, classes = "binary", two_columns, (0, 1)
    elif objective in _MULTICLASS:
        task, proba = "multiclass", np.asarray
        classes = tuple(range(int(booster.params.get("num_class", 0) or 0))) or None
    elif objective in _REGRESSION:
        task = "regression"
    predict = with_input(prepare, booster.predict)
    arrays = None
    if _arrays_ok(source, booster, prepare, None):
        arrays = ArrayCalls(booster.predict,
                            then(booster.predict, proba) if proba is not None else None)
    return NativeModel(model=booster, predict=predict,
                       predict_proba=then(predict, proba) if proba is not None else None,
                       classes=classes if proba is not None else None, task=task,
                       arrays=arrays)


def _arrays_ok(source: Source, booster: Any, prepare: Call | None, model: Any) -> bool:
    names = booster.feature_name()
    if all(_UNNAMED.match(n) for n in names):
        names = None
    if prepare is not None or booster.pandas_categorical or not array_ready(source.schema,
                                                                            names):
        return False
    if model is None:
        return True
    return not callable(model.objective) and not any(
        _PREDICT_PARAMS.search(str(k)) for k in model.get_params())


def _sklearn_arrays(model: Any, classes: Any) -> ArrayCalls:
    """The Booster call behind the scikit-learn API's predict / predict_proba, with its
    post-processing."""
    predict = model.booster_.predict
    if classes is None:
        return ArrayCalls(predict)
    multiclass = len(classes) > 2

    def proba(data: Any) -> Any:
        result = predict(data)
        return result if multiclass else two_columns(result)

    def labels(data: Any) -> Any:
        return classes[np.argmax(proba(data), axis=1)]

    return ArrayCalls(labels, proba)


def _categories(source: Source, booster: Any) -> dict[str, list[Any] | None]:
    """Category columns and their categories: the project's metadata, else the categories
    LightGBM saved, in the order of the signature's text columns."""
    named = source.project.get("categories")
    if isinstance(named, dict) and named:
        return {str(c): list(v) for c, v in named.items() if c in source.schema.by_name}
    saved = booster.pandas_categorical or []
    text = source.schema.text_columns
    if not saved or len(saved) != len(text):
        return {}  # nothing to convert (or no way to tell which: the warm-up will say)
    return {name: list(values) for name, values in zip(text, saved, strict=True)}

