"""The registered model's own answers, which ``verify`` holds the endpoint to.

MLflow's pyfunc is the reference every client of MLflow gets, and answers for every model
it can score. It cannot score an XGBoost or LightGBM model with category columns: its
schema check refuses a pandas Categorical for the signature's ``string`` column, and both
libraries refuse text. For those, the answers are the library's own, computed as the
flavor's pyfunc calls it (``predict``; a Booster through a ``DMatrix``), on the rows with
those columns as Categoricals: with the categories of ``metadata.ctcd.categories`` (the
dtype the model was trained on), or, for a model logged without them, the column's own
values, which XGBoost and LightGBM re-code by the categories they saved with the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ctcd.serving.flavors import categorical

NATIVE = ("xgboost", "lightgbm")


def expected(model_uri: str, rows: pd.DataFrame) -> np.ndarray:
    """What the model at ``model_uri`` answers for ``rows`` (feature columns as a client
    sends them)."""
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    flavor = next((name for name in NATIVE if name in pyfunc.metadata.flavors), None)
    prepare = categorical(_category_columns(pyfunc.metadata, rows)) if flavor else None
    if prepare is None:
        return np.asarray(pyfunc.predict(rows))
    model = getattr(mlflow, str(flavor)).load_model(model_uri)
    typed = prepare(rows)
    if flavor == "xgboost":
        import xgboost as xgb

        if isinstance(model, xgb.Booster):
            return np.asarray(model.predict(xgb.DMatrix(typed, enable_categorical=True),
                                            validate_features=True))
        return np.asarray(model.predict(typed, validate_features=True))
    return np.asarray(model.predict(typed))


def _category_columns(meta: Any, rows: pd.DataFrame) -> dict[str, list[Any] | None]:
    """The categories of each category column in ``rows``: the named ones, else None (by
    their values) for the text columns of the signature."""
    project = (meta.metadata or {}).get("ctcd") or {}
    named = project.get("categories") if isinstance(project, Mapping) else None
    if isinstance(named, Mapping) and named:
        return {str(column): list(values)
                for column, values in named.items() if column in rows.columns}
    signature = meta.get_input_schema()
    if signature is None or not signature.has_input_names():
        return {}
    text = [spec.name for spec in signature.inputs
            if str(getattr(spec, "type", "")).lower().endswith("string")]
    return {column: None for column in text if column in rows.columns}
