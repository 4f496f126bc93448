"""The ``lightgbm`` flavor: scikit-learn API models (pickle and skops) and Boosters of every
task, served natively with the answers of MLflow's own loader, with and without the
project's metadata, on one native thread."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.flavored_models import FlavoredFactory
from tests.serving.flavors.conftest import assert_served_natively

pytestmark = pytest.mark.e2e


# the -numeric kinds take the array path: the Booster behind the scikit-learn API, with the
# wrapper's own post-processing (labels, two columns of probabilities)
@pytest.mark.parametrize("kind", ["lightgbm-binary", "lightgbm-multiclass",
                                  "lightgbm-regression", "lightgbm-regression-bare",
                                  "lightgbm-booster", "lightgbm-numeric",
                                  "lightgbm-numeric-binary"])
def test_served_natively_with_mlflows_answers(kind: str, flavored_model: FlavoredFactory,
                                              served: Any) -> None:
    assert_served_natively(served(flavored_model(kind)), flavored_model(kind))


def test_an_unseen_category_is_missing_as_in_training(flavored_model: FlavoredFactory,
                                                      served: Any) -> None:
    """Without the project's metadata too: the categories LightGBM saved are used."""
    for kind in ("lightgbm-regression", "lightgbm-regression-bare"):
        model = flavored_model(kind)
        loaded = served(model)
        rows = model.frame.head(5).copy()
        rows["color"] = ["red", "purple", "green", "", "blue"]
        typed = rows.astype({"color": pd.CategoricalDtype(["red", "green", "blue"])})
        assert np.array_equal(loaded.predict(rows), model.raw().predict(typed))


def test_predicts_on_the_callers_native_threads(flavored_model: FlavoredFactory,
                                                served: Any) -> None:
    """The scikit-learn API would predict on every core (its n_jobs): the server's predict
    thread limits OpenMP to one thread (--threads 1), and no LightGBM call starts more."""
    from threadpoolctl import threadpool_limits

    calls = []
    for kind in ("lightgbm-binary", "lightgbm-numeric", "lightgbm-booster"):
        model = flavored_model(kind)
        loaded = served(model)
        calls.append((loaded, pd.concat([model.frame] * 50, ignore_index=True)))

    def predict_all() -> tuple[int, int]:
        before = len(os.listdir("/proc/self/task"))
        for loaded, frame in calls:
            for _ in range(3):
                answers_frame = loaded.predict(frame, outputs=loaded.output_names)
                assert len(answers_frame["predict"]) == len(frame)
        return before, len(os.listdir("/proc/self/task"))

    with ThreadPoolExecutor(1, initializer=lambda: threadpool_limits(limits=1)) as pool:
        before, after = pool.submit(predict_all).result()
    assert after == before
