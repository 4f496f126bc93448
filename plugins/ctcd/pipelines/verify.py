"""``verify``: after a deploy, the endpoint must answer holdout rows as the registered model
does, from the registered version, before the version is promoted.

The registered model's own answers (``mlflow.pyfunc``, the reference every client of MLflow
would get, or the library's own for a model with category columns pyfunc cannot take:
:mod:`ctcd.pipelines.oracle`) are the oracle. Labels must be equal; numbers (a
regression's predictions) equal within the model file's ``deployment.tolerance``, relative
and absolute, since the answers cross JSON as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ctcd.errors import DeploymentError
from ctcd.models.definition import ModelDefinition
from ctcd.pipelines import oracle
from ctcd.pipelines.ingest import holdout_split
from ctcd.settings import thread_limits
from ctcd.tracking import Tracking


def verify(
    definition: ModelDefinition,
    endpoint: str,
    registered: Mapping[str, Any],
    ingested: Mapping[str, Any],
    conf: Mapping[str, Any],
    tracking: Tracking,
) -> dict[str, Any]:
    """Send holdout rows to the endpoint; raise DeploymentError saying what differs."""
    import httpx

    _, spec, _, holdout = holdout_split(definition, ingested, conf)
    rows = holdout[list(spec.feature_names)].head(definition.deployment.verify_rows)
    with thread_limits(), tracking.active():
        expected = oracle.expected(registered["model_uri"], rows)
    body = '{"dataframe_split": ' + rows.to_json(orient="split", index=False) + "}"
    try:
        response = httpx.post(f"{endpoint}/invocations", content=body, timeout=30.0,
                              headers={"Content-Type": "application/json"})
    except httpx.TransportError as err:
        raise DeploymentError(f"The endpoint {endpoint} did not answer: {err}") from err
    if response.status_code != 200:
        raise DeploymentError(
            f"The endpoint {endpoint} answered {response.status_code}: {response.text[:300]}"
        )
    answering = response.headers.get("X-Model-Version")
    if answering != str(registered["version"]):
        raise DeploymentError(
            f"The endpoint answered with model version {answering}, expected "
            f"{registered['version']}; the deploy did not take effect."
        )
    served = np.asarray(response.json()["predictions"])
    differ = differences(served, expected, definition.deployment.tolerance)
    if differ:
        raise DeploymentError(
            f"The endpoint's predictions differ from the registered model's on {differ} of "
            f"{len(rows)} holdout rows; not promoting version {registered['version']}."
        )
    return {"rows_checked": len(rows), "version": registered["version"], "endpoint": endpoint}


def differences(served: np.ndarray, expected: np.ndarray, tolerance: float) -> int:
    """How many rows differ: numbers beyond ``tolerance`` (relative and absolute), anything
    else when not equal."""
    if served.shape != expected.shape:
        return int(max(served.shape[0] if served.ndim else 1, expected.shape[0]
                       if expected.ndim else 1))
    if served.dtype.kind in "fc" or expected.dtype.kind == "f":
        try:
            close = np.isclose(served.astype("float64"), expected.astype("float64"),
                               rtol=tolerance, atol=tolerance)
        except (TypeError, ValueError):
            close = served == expected
    else:
        close = served == expected
    if close.ndim > 1:
        close = close.all(axis=tuple(range(1, close.ndim)))
    return int((~close).sum())
