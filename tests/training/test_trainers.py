"""The two trainers: the built-in one and the user's function, with every way the user's
function can go wrong ending in a TrainingError that says what to do."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import ModelFiles

from ctcd.data.churn import generate_snapshot
from ctcd.data.spec import load_spec
from ctcd.errors import TrainingError
from ctcd.training.trainers import check, fit, resolve_function

FRAME = generate_snapshot(date(2026, 3, 1), rows=2_000)


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    (folder / "user_trainers").mkdir(parents=True)
    monkeypatch.setenv("CTCD_CODE_DIR", str(folder))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _module(code_dir: Path, name: str, body: str) -> str:
    (code_dir / "user_trainers" / f"{name}.py").write_text(textwrap.dedent(body))
    return f"user_trainers.{name}:train"


def _fit(model_files: ModelFiles, function: str, **params: object):
    model = model_files.write("mine", trainer={"function": function, "hyperparameters": params})
    return fit(model, load_spec("churn"), FRAME, estimator="", hyperparameters=params, seed=3)


def test_a_user_function_gets_x_y_params_and_spec(model_files: ModelFiles,
                                                   code_dir: Path) -> None:
    path = _module(code_dir, "good", """
        from sklearn.pipeline import make_pipeline
        from sklearn.compose import make_column_transformer
        from sklearn.preprocessing import OneHotEncoder
        from sklearn.linear_model import LogisticRegression
        SEEN = {}

        def train(X, y, params, spec):
            SEEN.update(columns=list(X.columns), rows=len(y), params=params, spec=spec.name)
            encode = make_column_transformer(
                (OneHotEncoder(handle_unknown="ignore"), list(spec.categorical_features)),
                remainder="passthrough")
            return make_pipeline(encode, LogisticRegression(C=params["C"], max_iter=2000)).fit(X, y)
    """)
    fitted = _fit(model_files, path, C=0.5)
    import user_trainers.good as module

    seen = module.SEEN
    assert seen["columns"] == list(load_spec("churn").feature_names)
    assert seen["rows"] == len(FRAME) and seen["spec"] == "churn"
    assert seen["params"] == {"C": 0.5, "seed": 3, "task": "binary"}
    assert fitted.code_paths == [str(code_dir / "user_trainers")]
    assert set(np.unique(fitted.model.predict(FRAME[list(seen["columns"])]))) <= {0, 1}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("def train(X, y, params, spec):\n    raise ValueError('no good')\n",
         "raised ValueError: no good"),
        ("def train(X, y, params, spec):\n    return None\n", "returned None"),
        ("import nonexistent_package_xyz\n", "cannot import 'user_trainers.broken_{n}'"),
        ("VALUE = 1\n", "has no function 'train'"),
    ],
)
def test_a_user_function_that_fails_says_so(model_files: ModelFiles, code_dir: Path,
                                            body: str, says: str) -> None:
    n = abs(hash(body)) % 10_000
    path = _module(code_dir, f"broken_{n}", body)
    with pytest.raises(TrainingError, match=says.format(n=n).replace("(", r"\(")):
        resolve_function(path) if "import" in says or "function" in says else _fit(
            model_files, path)


def test_check_fails_fast_on_a_trainer_that_does_not_import(model_files: ModelFiles,
                                                            code_dir: Path) -> None:
    model = model_files.write("mine", trainer={"function": "user_trainers.absent:train"})
    with pytest.raises(TrainingError, match=r"cannot import 'user_trainers\.absent'"):
        check(model, "", {}, 0)


def test_the_built_in_trainer_with_the_same_seed_gives_the_same_model(
        model_files: ModelFiles) -> None:
    model = model_files.write("forest", trainer={"estimator": "random_forest",
                                                 "hyperparameters": {"n_estimators": 15}})
    spec = load_spec("churn")
    runs = [fit(model, spec, FRAME, estimator="random_forest",
                hyperparameters={"n_estimators": 15}, seed=seed).model for seed in (1, 1, 2)]
    rows = FRAME[list(spec.feature_names)]
    first, again, other = (m.predict_proba(rows)[:, 1] for m in runs)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_an_estimator_that_cannot_fit_the_rows_is_a_training_error(
        model_files: ModelFiles) -> None:
    model = model_files.write("svc", trainer={"estimator": "sklearn.svm.LinearSVC"})
    spec = load_spec("churn")
    one_class = FRAME.assign(churned=0)
    with pytest.raises(TrainingError, match="could not be fitted on the training rows"):
        fit(model, spec, one_class, estimator="sklearn.svm.LinearSVC", hyperparameters={},
            seed=0)
