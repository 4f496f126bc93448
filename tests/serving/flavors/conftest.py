"""Checks shared by the flavor tests: a registered model, loaded and warmed as the server
loads it, answers what MLflow's own loader and the library answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.flavored_models import FlavoredModel

from ctcd.serving.model import LoadedModel, load
from ctcd.serving.schema import check_columns


@pytest.fixture
def served() -> Any:
    loaded: list[LoadedModel] = []

    def serve(model: FlavoredModel) -> LoadedModel:
        one = load(model.uri)
        one.warm()
        loaded.append(one)
        return one

    yield serve
    for one in loaded:
        one.close()


def answers(loaded: LoadedModel, model: FlavoredModel) -> dict[str, np.ndarray]:
    """Every output of ``loaded`` on the model's rows, sent as a client sends them (checked
    against the signature first, as every protocol does)."""
    frame = model.frame
    table = check_columns(loaded.schema, {c: frame[c].tolist() for c in frame.columns}, "")
    got = loaded.predict(table.to_model_input(), outputs=loaded.output_names)
    assert np.array_equal(np.asarray(loaded.predict_table(table)), np.asarray(got["predict"]))
    return {name: np.asarray(value) for name, value in got.items()}


def assert_served_natively(loaded: LoadedModel, model: FlavoredModel) -> None:
    """Loaded by the model's own flavor (no pyfunc), for its task, with MLflow's answers,
    given ndarrays where every column is a number and frames where one is a category."""
    assert loaded.native is not None and loaded.pyfunc is None
    assert loaded.native.flavor == model.flavor
    assert loaded.task == model.task
    assert_same_as_mlflow(loaded, model)
    assert loaded.takes_arrays == (not model.categories)


def assert_same_as_mlflow(loaded: LoadedModel, model: FlavoredModel) -> None:
    got = answers(loaded, model)
    expected = model.expected(model.frame)
    assert got["predict"].dtype == expected.dtype
    assert np.array_equal(got["predict"], expected)
    if model.task == "regression":
        assert loaded.output_names == ("predict",)
        assert loaded.classes is None
    else:
        assert loaded.output_names == ("predict", "predict_proba")
        assert np.array_equal(got["predict_proba"], model.expected_proba(model.frame))
        assert loaded.classes == model.classes
