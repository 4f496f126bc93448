"""The independent oracle for the answers a test gets back: MLflow's own pyfunc loader, not
the project's (the model server, the scorers, ``ctcd predict`` and the batch jobs all load
models through ``ctcd.serving.model``, the code under test)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def pyfunc_predictions(model_uri: str, rows: pd.DataFrame | Sequence[Mapping[str, Any]], *,
                       tracking_uri: str | None = None) -> list[Any]:
    """``mlflow.pyfunc.load_model(model_uri).predict(rows)`` as plain Python values.

    ``tracking_uri``: the MLflow server to resolve ``models:/`` URIs against when it is not
    the one this process points at (a stack the test started): the model is downloaded from
    it by a process of its own, so this one's MLflow settings stay as they are."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if tracking_uri is None:
        return _predict(model_uri, frame)
    with tempfile.TemporaryDirectory(prefix="ctcd-oracle-") as folder:
        return _predict(_download(model_uri, tracking_uri, folder), frame)


def _predict(model_uri: str, frame: pd.DataFrame) -> list[Any]:
    import mlflow
    import numpy as np

    answers: list[Any] = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(frame)).tolist()
    return answers


def _download(model_uri: str, tracking_uri: str, folder: str) -> str:
    """A local copy of ``model_uri`` from the MLflow server ``tracking_uri``, in ``folder``.
    (MLflow resolves ``models:/`` against its process-wide registry URI, whatever
    ``download_artifacts`` is given, hence a process.)"""
    code = ("import sys, mlflow; print(mlflow.artifacts.download_artifacts("
            "artifact_uri=sys.argv[1], dst_path=sys.argv[2]))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "MLFLOW_REGISTRY_URI": tracking_uri}
    done = subprocess.run([sys.executable, "-c", code, model_uri, folder], env=env, timeout=300,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def request_rows(request: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of an MLflow scoring request in the ``dataframe_split`` format."""
    split = request["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])
