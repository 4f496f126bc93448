"""Model flavors the server loads and calls itself: no mlflow import, no pyfunc wrapper.

A flavor is one module with one function, ``load(source: Source) -> NativeModel | None``:
given the model directory, its parsed ``MLmodel`` and that flavor's section of it, it
deserializes the model exactly as MLflow's own flavor loader would and returns the calls
MLflow's pyfunc would make (:class:`NativeModel`), or None when it cannot promise the same
answers (custom code, a model class or format it does not know): the server then goes
through ``mlflow.pyfunc``. The module is picked by the pyfunc loader that ``MLmodel`` names
(:data:`FLAVORS`), so serving another runtime natively is one module and one line there.

What every flavor shares is here: the task and classes (the project's ``metadata.ctcd``
first, else what the model says), category columns turned into pandas Categoricals, and
the *array path*: calls on the ndarray of all-numeric rows that answer exactly as the
frame calls do, tried at warm-up (:func:`try_arrays`).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, cast

import numpy as np

from ctcd.serving.errors import ModelLoadError
from ctcd.serving.schema import InputSchema, Table

log = logging.getLogger(__name__)

# The pyfunc ``loader_module`` of an MLmodel -> the module that serves that flavor natively.
FLAVORS: Final[dict[str, str]] = {
    "mlflow.sklearn": "ctcd.serving.flavors.sklearn",
    "mlflow.xgboost": "ctcd.serving.flavors.xgboost",
    "mlflow.lightgbm": "ctcd.serving.flavors.lightgbm",
}

Task = Literal["binary", "multiclass", "regression"]
TASKS: Final[tuple[str, ...]] = ("binary", "multiclass", "regression")
Call = Callable[[Any], Any]


@dataclass(frozen=True)
class Source:
    """What a flavor's ``load`` is given."""

    uri: str  # for messages
    local: Path  # the model directory
    meta: Mapping[str, Any]  # the parsed MLmodel
    conf: Mapping[str, Any]  # MLmodel ``flavors.<this flavor>``
    schema: InputSchema

    @property
    def project(self) -> Mapping[str, Any]:
        """The project's own metadata (``metadata.ctcd``; empty for a model logged by hand)."""
        value = (self.meta.get("metadata") or {}).get("ctcd")
        return value if isinstance(value, Mapping) else {}

    def data_path(self) -> Path:
        """The model file the flavor section names (``data``)."""
        return self.local / str(self.conf.get("data"))

    def failed(self, err: BaseException) -> ModelLoadError:
        return ModelLoadError(self.uri, f"cannot deserialize {self.conf.get('data')}: "
                              f"{type(err).__name__}: {err}")


@dataclass(frozen=True)
class ArrayCalls:
    """Calls on the 2-D ndarray of the checked columns (every column a number of one dtype,
    in signature order) that answer as the frame calls do, for less. ``setup`` may change
    the loaded copy to allow them (and ``undo`` puts it back)."""

    predict: Call
    predict_proba: Call | None = None
    setup: Callable[[], None] = lambda: None
    undo: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class NativeModel:
    """A model the server calls itself: what a flavor's ``load`` returns."""

    model: Any  # the deserialized object, as MLflow's flavor loader returns it
    predict: Call  # what the pyfunc's ``predict`` calls, given the checked DataFrame
    predict_proba: Call | None = None  # a classifier's class probabilities (rows x classes)
    classes: tuple[Any, ...] | None = None  # the columns of predict_proba, in order
    task: Task | None = None  # None: the model does not say (e.g. a ranker)
    arrays: ArrayCalls | None = None
    flavor: str = ""


def load_native(model_uri: str, local: Path, meta: Mapping[str, Any],
                schema: InputSchema) -> NativeModel | None:
    """The model at ``local`` as a :class:`NativeModel`, or None when it goes through pyfunc."""
    flavors = meta.get("flavors") or {}
    pyfunc_conf = flavors.get("python_function") or {}
    loader = str(pyfunc_conf.get("loader_module") or "")
    module = FLAVORS.get(loader)
    name = loader.rpartition(".")[2]
    conf = flavors.get(name)
    if module is None or not conf or pyfunc_conf.get("code") or conf.get("code"):
        return None  # custom code on the pyfunc's path: only mlflow sets it up
    source = Source(model_uri, local, meta, conf, schema)
    native: NativeModel | None = importlib.import_module(module).load(source)
    if native is None:
        return None
    return _settle_task(replace(native, flavor=name), source.project, model_uri)


def _settle_task(native: NativeModel, project: Mapping[str, Any], model_uri: str) -> NativeModel:
    """The task and classes: the project's metadata where it says, else the model's.
    ``predict_proba`` only for a classifier."""
    task = native.task
    declared = project.get("task")
    if declared is not None and declared not in TASKS:
        log.warning("%s: metadata.ctcd.task %r is not one of %s; using what the model says "
                    "(%s)", model_uri, declared, list(TASKS), task)
    elif declared is not None:
        if task is not None and task != declared:
            log.warning("%s: metadata.ctcd.task is %r but the model looks %s; serving it as "
                        "%s", model_uri, declared, task, declared)
        task = cast(Task, declared)
    classifier = task in ("binary", "multiclass") or (task is None and bool(native.classes))
    if not classifier or native.predict_proba is None:
        return replace(native, task=task, predict_proba=None, classes=None,
                       arrays=native.arrays and replace(native.arrays, predict_proba=None))
    classes = native.classes
    named = project.get("classes")
    if isinstance(named, Sequence) and not isinstance(named, str) and named:
        if classes is None or len(classes) == len(named):
            classes = tuple(named)
        else:
            log.warning("%s: metadata.ctcd.classes has %d classes, the model %d; the model's "
                        "are used", model_uri, len(named), len(classes))
    return replace(native, task=task, classes=classes)


@contextmanager
def single_threaded() -> Iterator[None]:
    """OpenMP on the calling thread alone while a model is deserialized (call it once the
    model's library is imported, so its OpenMP runtime is loaded). XGBoost and LightGBM
    parse trees in parallel, and an OpenMP thread pool started in a server's supervisor
    before it forks its workers hangs them: their first predict waits at a barrier for
    threads that did not survive the fork."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def task_from_classes(classes: Sequence[Any] | None) -> Task | None:
    if classes is None:
        return None
    return "binary" if len(classes) == 2 else "multiclass"


def plain(values: Any) -> tuple[Any, ...] | None:
    """Class labels as plain JSON-able values (numpy scalars to Python)."""
    if values is None:
        return None
    return tuple(v.item() if isinstance(v, np.generic) else v for v in np.asarray(values))


def categorical(columns: Mapping[str, Sequence[Any] | None]) -> Callable[[Any], Any] | None:
    """A conversion of the frame's named columns (text, as the signature checked them) to
    pandas Categoricals: with the given categories in that order, the dtype the model was
    trained on (a value outside them becomes missing, as pandas does), or, for None, the
    column's own values (for a model that re-codes categories by value itself)."""
    if not columns:
        return None
    import pandas as pd

    dtypes = {name: pd.CategoricalDtype(list(values)) if values is not None else "category"
              for name, values in columns.items()}

    def convert(frame: Any) -> Any:
        return frame.astype(dtypes)

    return convert


def two_columns(p: Any) -> Any:
    """P(class 1) -> the two columns of a binary classifier's predict_proba, as XGBoost's
    and LightGBM's scikit-learn APIs make them."""
    return np.vstack((1.0 - p, p)).transpose()


def then(call: Call, after: Call) -> Call:
    """``after(call(data))``."""
    return lambda data: after(call(data))


def with_input(prepare: Callable[[Any], Any] | None, call: Call) -> Call:
    """``call`` given ``prepare(frame)``."""
    if prepare is None:
        return call
    return lambda frame: call(prepare(frame))


def array_ready(schema: InputSchema, features: Sequence[str] | None) -> bool:
    """Whether an ndarray of the signature's columns is what the model was trained on:
    every column a number of one dtype, and the model's features (None: unnamed) exactly
    the signature's, in order."""
    return (schema.block_dtype is not None
            and (features is None or [str(f) for f in features] == list(schema.names)))


def try_arrays(native: NativeModel, table: Table) -> bool:
    """Set up the model's array calls when they answer exactly as its frame calls on
    ``table`` (the input example, or a synthetic row) with no warning; otherwise undo and
    keep frames. Warnings are recorded, not raised: the filters are the process's, and
    other threads may be serving meanwhile (a version loaded beside the live one)."""
    arrays = native.arrays
    if arrays is None:
        return False
    frame = table.to_model_input()
    calls = [(native.predict, arrays.predict)]
    if native.predict_proba is not None and arrays.predict_proba is not None:
        calls.append((native.predict_proba, arrays.predict_proba))
    try:
        expected = [np.asarray(by_frame(frame)) for by_frame, _ in calls]
        arrays.setup()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = [np.asarray(by_array(frame.to_numpy())) for _, by_array in calls]
        same = not seen and all(g.dtype == e.dtype and np.array_equal(g, e)
                                for g, e in zip(got, expected, strict=True))
    except Exception:  # any doubt keeps frames
        same = False
    if not same:
        arrays.undo()
    return same

