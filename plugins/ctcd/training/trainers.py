"""The two trainers a model file can name, and the one signature of your own.

- ``trainer.estimator``: the built-in trainer (``ctcd.training.model``): the data set's
  preprocessing and the estimator, with the run's hyperparameters and seed.
- ``trainer.function: my_models.churn:train``: your code, called as::

      def train(X: pd.DataFrame, y: pd.Series, params: dict[str, Any],
                spec: DatasetSpec) -> Any:
          ...

  ``X`` holds the spec's feature columns of the training rows (the holdout is kept apart),
  as the served model will receive them (categories as text); ``y`` the label; ``params``
  the model file's ``trainer.hyperparameters`` with the run's overrides, plus ``seed`` and
  ``task`` (``binary``, ``multiclass`` or ``regression``); ``spec`` the data set spec. It
  returns a fitted model: a scikit-learn estimator or pipeline, an XGBoost or LightGBM
  model, or an ``mlflow.pyfunc.PythonModel`` (see ``ctcd.training.flavors``).

  The module is imported from the installed packages, or from the code directory
  (``CTCD_CODE_DIR``, default ``include/``), which is put on ``sys.path`` for it; a module
  found there is logged with the model (MLflow ``code_paths``), so classes it defines load
  wherever the model does.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.spec import DatasetSpec
from ctcd.errors import TrainingError
from ctcd.models.definition import ModelDefinition

log = logging.getLogger(__name__)

TrainFunction = Callable[[pd.DataFrame, pd.Series, dict[str, Any], DatasetSpec], Any]


@dataclass(frozen=True)
class Fitted:
    model: Any
    code_paths: list[str] | None = None


def resolve_function(path: str, *, where: str = "trainer.function") -> tuple[TrainFunction,
                                                                            list[str] | None]:
    """The function at ``module.path:function`` and the code to log with its model;
    TrainingError saying what is wrong."""
    from ctcd.settings import get_settings

    module_name, _, name = path.partition(":")
    code_dir = get_settings().code_dir
    if code_dir.is_dir() and str(code_dir) not in sys.path:
        sys.path.append(str(code_dir))
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises at import
        raise TrainingError(
            f"{where} {path!r}: cannot import {module_name!r} ({type(err).__name__}: {err}). "
            f"Put the module in an installed package or under {code_dir} (CTCD_CODE_DIR)."
        ) from err
    function = getattr(module, name, None)
    if not callable(function):
        raise TrainingError(f"{where} {path!r}: module {module_name!r} has no function "
                            f"{name!r}")
    return function, _code_paths(module, code_dir)


def _code_paths(module: Any, code_dir: Path) -> list[str] | None:
    """The top-level package (or module file) of ``module`` when it lives under
    ``code_dir``: what MLflow must copy for the model to load elsewhere."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    try:
        relative = Path(file).resolve().relative_to(code_dir.resolve())
    except ValueError:
        return None  # an installed package: it is where the model loads too
    return [str(code_dir / relative.parts[0])]


def check(definition: ModelDefinition, estimator: str, hyperparameters: Mapping[str, Any],
          seed: int) -> None:
    """Fail fast (before any data is read) on a trainer that cannot run."""
    from ctcd.errors import InvalidParams
    from ctcd.training.model import make_estimator

    if definition.trainer.function:
        resolve_function(definition.trainer.function)
        return
    try:
        make_estimator(estimator, hyperparameters, task=definition.resolved_task, seed=seed)
    except ValueError as err:
        raise InvalidParams(f"model {definition.key}: trainer: {err}") from None


def fit(
    definition: ModelDefinition,
    spec: DatasetSpec,
    train_set: pd.DataFrame,
    *,
    estimator: str,
    hyperparameters: Mapping[str, Any],
    seed: int,
) -> Fitted:
    """Train on ``train_set`` with the model file's trainer; TrainingError when it fails."""
    features, labels = train_set[list(spec.feature_names)], train_set[spec.label.name]
    task = definition.resolved_task
    if definition.trainer.function:
        function, code_paths = resolve_function(definition.trainer.function)
        params = {**dict(hyperparameters), "seed": seed, "task": task}
        log.info("training with %s (params %s) on %d rows", definition.trainer.function,
                 params, len(features))
        try:
            model = function(features.copy(), labels.copy(), params, spec)
        except Exception as err:  # the user's code: report whatever it raised
            log.exception("the trainer %s raised", definition.trainer.function)
            raise TrainingError(
                f"trainer.function {definition.trainer.function!r} of model {definition.key} "
                f"raised {type(err).__name__}: {err} (traceback above); nothing was registered"
            ) from err
        if model is None:
            raise TrainingError(f"trainer.function {definition.trainer.function!r} returned "
                                "None: return the fitted model")
        return Fitted(model, code_paths)
    from ctcd.training.model import build_pipeline

    try:
        pipeline = build_pipeline(estimator, hyperparameters, numeric=spec.numeric_features,
                                  categorical=spec.categorical_features, task=task, seed=seed)
    except ValueError as err:
        raise TrainingError(f"model {definition.key}: trainer: {err}") from None
    log.info("training %s (hyperparameters %s, seed %d) on %d rows", estimator,
             dict(hyperparameters), seed, len(features))
    try:
        pipeline.fit(features, labels)
    except (ValueError, TypeError) as err:
        raise TrainingError(f"model {definition.key}: {estimator} could not be fitted on the "
                            f"training rows: {err}") from err
    return Fitted(pipeline)
