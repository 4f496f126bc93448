"""Log whatever a trainer returned with the MLflow flavor that fits it.

| the trainer returned | logged as |
|---|---|
| an ``mlflow.pyfunc.PythonModel`` | ``pyfunc`` (served through pyfunc) |
| an XGBoost model (``XGBClassifier``, ``XGBRegressor``, ...) | ``xgboost`` (served natively) |
| a LightGBM model (``LGBMClassifier``, ``LGBMRegressor``, ...) | ``lightgbm`` (served natively) |
| any other fitted scikit-learn estimator or pipeline | ``sklearn`` in skops format (native) |

Every model goes with its signature, an input example and the project's metadata (MLmodel
``metadata.ctcd``: the task, the classes, the data set), which the model server reads.
Anything else is refused with a message that says what to return instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd

from ctcd.errors import TrainingError

Flavor = Literal["sklearn", "xgboost", "lightgbm", "pyfunc"]


def flavor_of(model: Any) -> Flavor:
    """The MLflow flavor ``model`` is logged with; TrainingError when none fits."""
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return "pyfunc"
    if isinstance(model, type):
        raise TrainingError(f"the trainer returned the class {model.__name__}, not a fitted "
                            "model: return an instance, fitted")
    package = type(model).__module__.split(".")[0]
    if package == "xgboost" and hasattr(model, "predict"):
        return "xgboost"
    if package == "lightgbm" and hasattr(model, "predict"):
        return "lightgbm"
    if callable(getattr(model, "predict", None)) and callable(getattr(model, "get_params", None)):
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError as err:
            raise TrainingError(f"the trainer returned an unfitted {type(model).__name__}: fit "
                                "it before returning it") from err
        except TypeError:
            pass  # not an estimator check_is_fitted knows; predicting will tell
        return "sklearn"
    raise TrainingError(
        f"the trainer returned {type(model).__module__}.{type(model).__qualname__}, which "
        "cannot be logged as a model: return a fitted scikit-learn estimator or pipeline, an "
        "XGBoost or LightGBM model, or an mlflow.pyfunc.PythonModel"
    )


def log_fitted(
    model: Any,
    input_example: pd.DataFrame,
    *,
    metadata: Mapping[str, Any],
    code_paths: list[str] | None = None,
) -> Any:
    """Log ``model`` (inside the active MLflow run) with the flavor that fits it; returns
    MLflow's ModelInfo. TrainingError when it cannot predict its own input example."""
    import mlflow
    from mlflow.models import infer_signature

    from ctcd.training.model import log_model, pip_requirements

    flavor = flavor_of(model)
    meta = {"ctcd": {**dict(metadata), "flavor": flavor}}
    if flavor == "sklearn":
        try:
            return log_model(model, input_example, metadata=meta, code_paths=code_paths)
        except (ValueError, TypeError, AttributeError) as err:
            raise TrainingError(f"the trained {type(model).__name__} could not predict its "
                                f"own input example ({err}), so it was not logged") from err
    if flavor == "pyfunc":
        return mlflow.pyfunc.log_model(
            name="model", python_model=model, input_example=input_example,
            code_paths=code_paths, metadata=meta,
            pip_requirements=pip_requirements("cloudpickle"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signature = infer_signature(input_example, model.predict(input_example))
    except Exception as err:  # the library's own error, whatever its type
        raise TrainingError(f"the trained {type(model).__name__} could not predict its own "
                            f"input example ({type(err).__name__}: {err}), so it was not "
                            "logged") from err
    if flavor == "xgboost":
        return mlflow.xgboost.log_model(
            model, name="model", signature=signature, input_example=input_example,
            metadata=meta, code_paths=code_paths, model_format="ubj",
            pip_requirements=pip_requirements(_xgboost_dist()))
    return mlflow.lightgbm.log_model(
        model, name="model", signature=signature, input_example=input_example,
        metadata=meta, code_paths=code_paths, serialization_format="pickle",
        pip_requirements=pip_requirements("lightgbm", "scikit-learn"))


def _xgboost_dist() -> str:
    """The installed XGBoost distribution: the CPU-only wheel or the full one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("xgboost-cpu")
        return "xgboost-cpu"
    except PackageNotFoundError:
        return "xgboost"
