"""The ``lightgbm`` flavor: scikit-learn API models (pickle and skops) and Boosters of every
task, served natively with the answers of MLflow's own loader, with and without the
project's metadata, on one native thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
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


# Counted in a process of its own: in the test session other tests' background threads
# (pools, servers' clients) may start at any moment and be counted as LightGBM's.
_COUNT_THREADS = """
import json, os, sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from threadpoolctl import threadpool_limits

from ctcd.serving.model import load

calls = []
for uri, path in json.loads(sys.argv[1]):
    loaded = load(uri)
    loaded.warm()
    calls.append((loaded, pd.read_pickle(path)))


def predict_all():
    before = len(os.listdir("/proc/self/task"))
    for loaded, frame in calls:
        for _ in range(3):
            answers = loaded.predict(frame, outputs=loaded.output_names)
            assert len(answers["predict"]) == len(frame)
    return before, len(os.listdir("/proc/self/task"))


with ThreadPoolExecutor(1, initializer=lambda: threadpool_limits(limits=1)) as pool:
    print(json.dumps(pool.submit(predict_all).result()))
"""


def test_predicts_on_the_callers_native_threads(flavored_model: FlavoredFactory,
                                                mlflow_server: str, tmp_path: Path) -> None:
    """The scikit-learn API would predict on every core (its n_jobs): the server's predict
    thread limits OpenMP to one thread (--threads 1), and no LightGBM call starts more.
    (With a limit of 4 instead of 1, this counts 3 threads started.)"""
    calls = []
    for kind in ("lightgbm-binary", "lightgbm-numeric", "lightgbm-booster"):
        model = flavored_model(kind)
        path = tmp_path / f"{kind}.pkl"
        pd.concat([model.frame] * 50, ignore_index=True).to_pickle(path)
        calls.append((model.uri, str(path)))
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_THREADS, json.dumps(calls)], capture_output=True,
        text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server})
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after == before, f"{after - before} threads started while predicting"
