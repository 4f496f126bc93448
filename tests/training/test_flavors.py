"""Whatever a trainer returns is logged with the flavor that fits, its signature, an input
example and the project's metadata; the logged model answers as the object did."""

from __future__ import annotations

from datetime import date
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from ctcd.data.examples import generate
from ctcd.data.spec import load_spec
from ctcd.errors import TrainingError
from ctcd.training.flavors import flavor_of, log_fitted

WINE = generate(load_spec("wine"), date(2026, 2, 1), 600)
DIABETES = generate(load_spec("diabetes"), date(2026, 2, 1), 600)


class Doubling(mlflow.pyfunc.PythonModel):
    """A user's own Python model: twice the body-mass index."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return (model_input["bmi"] * 2).to_numpy()


def _xy(frame: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.Series]:
    spec = load_spec(dataset)
    return frame[list(spec.feature_names)], frame[spec.label.name]


def _models() -> dict[str, tuple[Any, pd.DataFrame]]:
    import lightgbm
    import xgboost
    from sklearn.linear_model import Ridge

    wine_x, wine_y = _xy(WINE, "wine")
    diabetes_x, diabetes_y = _xy(DIABETES, "diabetes")
    return {
        "sklearn": (Ridge().fit(diabetes_x, diabetes_y), diabetes_x),
        "xgboost": (xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(wine_x, wine_y),
                    wine_x),
        "lightgbm": (lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(diabetes_x,
                                                                              diabetes_y),
                     diabetes_x),
        "pyfunc": (Doubling(), diabetes_x),
    }


@pytest.mark.parametrize("flavor", ["sklearn", "xgboost", "lightgbm", "pyfunc"])
def test_each_flavor_is_logged_and_answers_as_the_object_did(mlflow_server: str,
                                                            flavor: str) -> None:
    model, rows = _models()[flavor]
    assert flavor_of(model) == flavor
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-tests-flavors")
    with mlflow.start_run():
        info = log_fitted(model, rows.head(5), metadata={"task": "regression"})
    assert info.metadata["ctcd"] == {"task": "regression", "flavor": flavor}
    assert flavor in info.flavors or flavor == "pyfunc"
    assert info.signature is not None
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    expected = (model.predict(None, rows) if flavor == "pyfunc" else model.predict(rows))
    np.testing.assert_allclose(np.asarray(loaded.predict(rows), dtype="float64"),
                               np.asarray(expected, dtype="float64"), rtol=1e-6)


@pytest.mark.parametrize(
    ("returned", "says"),
    [
        ({"weights": [1, 2]}, "cannot be logged as a model: return a fitted scikit-learn"),
        (pd.DataFrame, "returned the class DataFrame, not a fitted model"),
    ],
)
def test_what_is_not_a_model_is_refused(returned: Any, says: str) -> None:
    with pytest.raises(TrainingError, match=says):
        flavor_of(returned)


def test_an_unfitted_estimator_is_refused() -> None:
    from sklearn.ensemble import RandomForestClassifier

    with pytest.raises(TrainingError, match="unfitted RandomForestClassifier: fit it"):
        flavor_of(RandomForestClassifier())
