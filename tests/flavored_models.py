"""Models of every task in the flavors the server serves natively, registered on the tests'
MLflow server the way training logs them: fitted on small generated data, logged with their
own MLflow flavor (``mlflow.xgboost`` / ``mlflow.lightgbm`` / ``mlflow.sklearn``), a
signature with the category column as text, and the project's ``metadata.ctcd`` (task,
classes, categories); ``*-bare`` kinds have no metadata, as a model logged by hand.

Each comes with an oracle that does not use the server's code: MLflow's own flavor loader
and the library's own predict, given the frame with the category column as the pandas
Categorical it was trained on (MLflow's pyfunc cannot take that column at all: its schema
check refuses a Categorical for a ``string`` column, and XGBoost and LightGBM refuse text).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

COLORS = ["red", "green", "blue"]
NUMERIC = [f"x{i}" for i in range(4)]
FEATURES = [*NUMERIC, "visits", "color"]
GRADES = ["high", "low", "mid"]  # sorted: scikit-learn's classes_ order

# kind -> (flavor, task, has a category column, metadata.ctcd written)
KINDS: dict[str, tuple[str, str, bool, bool]] = {
    "xgboost-binary": ("xgboost", "binary", True, True),
    "xgboost-binary-bare": ("xgboost", "binary", True, False),
    "xgboost-multiclass": ("xgboost", "multiclass", True, True),
    "xgboost-regression": ("xgboost", "regression", True, True),
    "xgboost-booster": ("xgboost", "multiclass", True, True),  # a Booster, multi:softprob
    "xgboost-numeric": ("xgboost", "binary", False, True),
    "lightgbm-binary": ("lightgbm", "binary", True, True),
    "lightgbm-multiclass": ("lightgbm", "multiclass", True, True),  # skops format
    "lightgbm-regression": ("lightgbm", "regression", True, True),
    "lightgbm-regression-bare": ("lightgbm", "regression", True, False),
    "lightgbm-booster": ("lightgbm", "binary", False, True),  # a Booster, binary
    "lightgbm-numeric": ("lightgbm", "regression", False, True),
    "lightgbm-numeric-binary": ("lightgbm", "binary", False, True),
    "sklearn-regression": ("sklearn", "regression", True, True),  # a pipeline
    "sklearn-multiclass": ("sklearn", "multiclass", True, True),  # text labels
}


@dataclass(frozen=True)
class FlavoredModel:
    kind: str
    flavor: str
    task: str
    name: str
    version: str
    uri: str
    frame: pd.DataFrame  # feature rows as a client sends them (the category column as text)
    classes: tuple[Any, ...] | None
    categories: dict[str, list[str]] = field(default_factory=dict)

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` as the model was trained on it (category columns as Categoricals)."""
        return frame.astype({c: pd.CategoricalDtype(v) for c, v in self.categories.items()})

    def raw(self) -> Any:
        """The model as MLflow's own flavor loader returns it."""
        import mlflow

        return getattr(mlflow, self.flavor).load_model(self.uri)

    def expected(self, frame: pd.DataFrame) -> np.ndarray:
        """What MLflow's pyfunc answers (computed as it does, on the typed frame)."""
        if not self.categories:
            import mlflow

            return np.asarray(mlflow.pyfunc.load_model(self.uri).predict(frame))
        model = self.raw()
        typed = self.typed(frame)
        if self.flavor == "xgboost":
            import xgboost as xgb

            if isinstance(model, xgb.Booster):
                return np.asarray(model.predict(xgb.DMatrix(typed, enable_categorical=True),
                                                validate_features=True))
            return np.asarray(model.predict(typed, validate_features=True))
        return np.asarray(model.predict(typed))

    def expected_proba(self, frame: pd.DataFrame) -> np.ndarray:
        model = self.raw()
        typed = self.typed(frame)
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(typed))
        p = self.expected(frame)  # a Booster's predict is its probabilities
        return p if p.ndim == 2 else np.column_stack([1 - p, p])  # binary: P(1) alone


def make_frame(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features as a client sends them, and the same with ``color`` Categorical; labels are
    in the typed frame's ``binary``, ``multiclass`` and ``regression`` columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(NUMERIC))), columns=NUMERIC)
    frame["visits"] = rng.integers(0, 20, size=rows).astype("int64")
    frame["color"] = rng.choice(COLORS, size=rows).astype(object)
    typed = frame.astype({"color": pd.CategoricalDtype(COLORS)})
    score = (frame["x0"] + 0.5 * frame["x1"] - 0.05 * frame["visits"]
             + typed["color"].cat.codes * 0.7 + rng.normal(scale=0.3, size=rows))
    typed["binary"] = (score > 0).astype("int64")
    typed["multiclass"] = np.digitize(score, [-0.5, 0.8]).astype("int64")
    typed["regression"] = score * 10 + 3
    return frame, typed


def _fit(kind: str, typed: pd.DataFrame) -> Any:
    import lightgbm as lgb
    import xgboost as xgb

    flavor, task, category, _ = KINDS[kind]
    x = typed[FEATURES] if category else typed[NUMERIC]
    y = typed[task]
    if kind == "xgboost-booster":
        return xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
                         xgb.DMatrix(x, y, enable_categorical=True), num_boost_round=20)
    if kind == "lightgbm-booster":
        return lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15},
                         lgb.Dataset(x, y), num_boost_round=20)
    if flavor == "xgboost":
        cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
        return cls(n_estimators=20, max_depth=3, enable_categorical=True).fit(x, y)
    if flavor == "lightgbm":
        cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
        return cls(n_estimators=20, num_leaves=15, verbose=-1).fit(x, y)
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer([("num", StandardScaler(), [*NUMERIC, "visits"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])])
    text = x.astype({"color": object})
    if task == "regression":
        return make_pipeline(columns, Ridge()).fit(text, y)
    labels = np.asarray(GRADES)[[1, 2, 0]][y]  # 0 -> low, 1 -> mid, 2 -> high
    return make_pipeline(columns, LogisticRegression(max_iter=500)).fit(text, labels)


def register(kind: str, tracking_uri: str) -> FlavoredModel:
    import mlflow
    from mlflow.models import infer_signature

    flavor, task, category, with_metadata = KINDS[kind]
    frame, typed = make_frame(600, seed=7)
    model = _fit(kind, typed)
    columns = FEATURES if category else NUMERIC
    sent = frame[columns]
    categories = {"color": COLORS} if category and flavor != "sklearn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = _predict_typed(model, typed[columns])
    classes: tuple[Any, ...] | None = None
    if task != "regression":
        classes = tuple(GRADES) if flavor == "sklearn" else tuple(range(3 if task ==
                                                                        "multiclass" else 2))
    metadata = None
    if with_metadata:
        ctcd: dict[str, Any] = {"task": task, "flavor": flavor}
        if classes is not None:
            ctcd["classes"] = list(classes)
        if categories:
            ctcd["categories"] = categories
        metadata = {"ctcd": ctcd}
    name = f"flavored-{kind}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("ctcd-flavored-models")
    options: dict[str, Any] = {}
    if flavor == "lightgbm" and "Booster" not in type(model).__name__:
        options["serialization_format"] = "skops" if kind == "lightgbm-multiclass" else "pickle"
    with warnings.catch_warnings(), mlflow.start_run():
        warnings.simplefilter("ignore")
        info = getattr(mlflow, flavor).log_model(
            model, name="model", signature=infer_signature(sent.head(20), predicted[:20]),
            input_example=sent.head(5), metadata=metadata, registered_model_name=name,
            **options)
    version = str(info.registered_model_version)
    return FlavoredModel(kind=kind, flavor=flavor, task=task, name=name, version=version,
                         uri=f"models:/{name}/{version}",
                         frame=sent.sample(40, random_state=3).reset_index(drop=True),
                         classes=classes, categories=categories)


def _predict_typed(model: Any, x: pd.DataFrame) -> np.ndarray:
    import xgboost as xgb

    if isinstance(model, xgb.Booster):
        return np.asarray(model.predict(xgb.DMatrix(x, enable_categorical=True)))
    if type(model).__module__.startswith("sklearn."):
        x = x.astype({"color": object}) if "color" in x else x
    return np.asarray(model.predict(x))


class Registry:
    """Registers each kind once per session, on first use."""

    def __init__(self, tracking_uri: str) -> None:
        self._uri = tracking_uri
        self._made: dict[str, FlavoredModel] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str) -> FlavoredModel:
        with self._lock:
            if kind not in self._made:
                self._made[kind] = register(kind, self._uri)
            return self._made[kind]


FlavoredFactory = Callable[[str], FlavoredModel]
