"""The ``sklearn`` flavor: load a model the way ``mlflow.sklearn`` does, without mlflow.

The model file named by ``MLmodel`` is deserialized in its ``serialization_format``
(skops, pickle or cloudpickle) under the same rules as ``mlflow.sklearn``: nothing is
deserialized when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false, and a skops file is
audited by skops against the model's ``skops_trusted_types`` plus skops' defaults.

At import ``skops.io`` lists the scikit-learn estimators it trusts by default with
``sklearn.utils.all_estimators()``, which imports every public scikit-learn module
(scipy.optimize, scipy.spatial, ...): about 0.3 s of CPU here, 10-15% of a cold start,
paid again by every worker process. So skops is imported with that list empty, and the
list is then filled, before each load, with the estimators the file names that
``all_estimators()`` does list, each checked on its own (:func:`listed_estimator`). When
one cannot be confirmed that way, the full list is computed as skops would. The audit
itself stays skops' own, so a model loads here exactly when skops would load it for
mlflow, and into the same object.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import threading
from pathlib import Path
from typing import Any

from ctcd.serving.errors import ModelLoadError
from ctcd.serving.flavors import (
    ArrayCalls,
    NativeModel,
    Source,
    Task,
    array_ready,
    plain,
    task_from_classes,
)

FORMATS = ("skops", "pickle", "cloudpickle")

_SKOPS_LOCK = threading.Lock()


def load(source: Source) -> NativeModel | None:
    """The scikit-learn model (estimator or pipeline) of ``source``; None when it is not one
    this module deserializes as ``mlflow.sklearn`` does (unknown format)."""
    pyfunc_conf = (source.meta.get("flavors") or {}).get("python_function") or {}
    conf = source.conf
    fmt = conf.get("serialization_format", "pickle")
    path = source.local / str(pyfunc_conf.get("model_path") or conf.get("pickled_model"))
    if fmt not in FORMATS or not path.is_file():
        return None
    model = deserialize(source.uri, path, fmt, conf.get("skops_trusted_types"))
    predict_fn = getattr(model, str(pyfunc_conf.get("predict_fn") or "predict"), None)
    if not callable(predict_fn):
        raise ModelLoadError(source.uri, f"the model has no {pyfunc_conf.get('predict_fn')}()")
    classes = getattr(model, "classes_", None)
    proba = getattr(model, "predict_proba", None)  # None when unavailable (available_if)
    if classes is None or not callable(proba):
        proba = None
    return NativeModel(model=model, predict=predict_fn, predict_proba=proba,
                       classes=plain(classes), task=_task(model, classes),
                       arrays=_arrays(model, predict_fn, proba, source))


def _task(model: Any, classes: Any) -> Task | None:
    from sklearn.base import is_regressor

    if classes is not None:
        return task_from_classes(classes)
    try:
        return "regression" if is_regressor(model) else None
    except (AttributeError, TypeError, ValueError):  # an estimator sklearn cannot tag
        return None


def _arrays(model: Any, predict_fn: Any, proba: Any, source: Source) -> ArrayCalls | None:
    """A bare estimator (a pipeline's steps may select columns by name) fitted on exactly
    the signature's numeric columns, in order, given the ndarray the server already built:
    scikit-learn's own check of a DataFrame's names costs about a quarter of a small
    forest's predict. Its ``feature_names_in_`` is dropped (this loaded copy only), since
    scikit-learn warns when an estimator fitted with names is given an ndarray."""
    names = getattr(model, "feature_names_in_", None)
    if hasattr(model, "steps") or not array_ready(source.schema, names):
        return None
    if names is None:
        return ArrayCalls(predict_fn, proba)

    def setup() -> None:
        del model.feature_names_in_

    def undo() -> None:
        model.feature_names_in_ = names

    return ArrayCalls(predict_fn, proba, setup, undo)


def deserialize(model_uri: str, path: Path, fmt: str, trusted: list[str] | None) -> Any:
    """A model file in one of mlflow's scikit-learn formats (also LightGBM's scikit-learn
    API models), under mlflow's rule for pickles."""
    if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").lower() in ("false", "0"):
        raise ModelLoadError(model_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false, so "
                             "scikit-learn models may not be deserialized here")
    try:
        if fmt == "skops":
            return load_skops(path, trusted)
        with open(path, "rb") as f:
            if fmt == "cloudpickle":
                import cloudpickle

                return cloudpickle.load(f)
            return pickle.load(f)
    except (OSError, ValueError, TypeError, ImportError, AttributeError,
            pickle.UnpicklingError) as err:
        raise ModelLoadError(model_uri, f"cannot deserialize {path.name}: "
                             f"{type(err).__name__}: {err}") from err


def load_skops(path: Path, trusted: list[str] | None) -> Any:
    """``skops.io.load(path, trusted=trusted)``, as mlflow calls it."""
    skops_io = _skops_io()
    from skops.io import _trusted_types

    estimators: list[str] = _trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES
    with _SKOPS_LOCK:
        wanted = [name for name in skops_io.get_untrusted_types(file=path)
                  if name not in estimators and name not in (trusted or ())]
        for name in wanted:
            if listed_estimator(name):
                estimators.append(name)
            else:  # unsure: skops' own full list (still refused if not in it)
                estimators.extend(n for n in _all_estimator_names() if n not in estimators)
                break
    return skops_io.load(path, trusted=trusted)


def _skops_io() -> Any:
    """``skops.io``, imported without its ``all_estimators()`` scan (skops' list of default
    trusted estimators starts empty; :func:`load_skops` fills it)."""
    import sys

    with _SKOPS_LOCK:
        if "skops.io" not in sys.modules:
            import sklearn.utils

            scan = sklearn.utils.all_estimators
            sklearn.utils.all_estimators = lambda type_filter=None: []
            try:
                import skops.io  # noqa: F401
            finally:
                sklearn.utils.all_estimators = scan
    return sys.modules["skops.io"]


def listed_estimator(type_name: str) -> bool:
    """Whether ``sklearn.utils.all_estimators()`` lists the class skops names
    ``type_name``, decided by importing only the public package above its module.

    ``all_estimators()`` walks every public scikit-learn module (no ``_`` part, none of
    ``tests``, ``externals``, ...) and keeps the public, concrete ``BaseEstimator``
    subclasses they export. A class that the public package above its own module exports
    under its own name is found by that walk. False means "not confirmed" (such a class may
    still be exported elsewhere)."""
    from sklearn.base import BaseEstimator
    from sklearn.utils.discovery import _MODULE_TO_IGNORE
    from skops.io._utils import get_type_name

    module_name, _, class_name = type_name.rpartition(".")
    parts = module_name.split(".")
    public = []
    for part in parts:
        if part.startswith("_"):
            break
        public.append(part)
    if (parts[0] != "sklearn" or len(public) < 2 or class_name.startswith("_")
            or class_name == "BaseEstimator" or any(p in _MODULE_TO_IGNORE for p in public)):
        return False
    try:
        cls = getattr(importlib.import_module(".".join(public)), class_name, None)
    except ImportError:
        return False
    return (inspect.isclass(cls) and issubclass(cls, BaseEstimator)
            and not getattr(cls, "__abstractmethods__", None)
            and get_type_name(cls) == type_name)


def _all_estimator_names() -> list[str]:
    """skops' default trusted estimators, computed as skops computes them at import."""
    from sklearn.utils import all_estimators
    from skops.io._utils import get_type_name

    names = (get_type_name(cls) for _, cls in all_estimators())
    return [name for name in names if name.startswith("sklearn.")]
