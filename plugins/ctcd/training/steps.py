"""The logic of each continuous_training task, free of Airflow so it is tested directly.

Each step takes plain values and returns a small JSON-able dict (paths, URIs, ids, metrics)
that Airflow passes on through XCom; data frames and models never leave a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ctcd.settings import get_settings, thread_limits
from ctcd.training.params import parse_params

EXPERIMENT = "continuous_training"


def _use_tracking() -> None:
    import mlflow

    mlflow.set_tracking_uri(get_settings().tracking_uri())


def ingest(conf: Mapping[str, Any], logical_date: date | None) -> dict[str, Any]:
    """Check the run's parameters, then materialise the day's snapshot."""
    from ctcd.data.snapshots import ingest as ingest_snapshot

    params = parse_params(conf)
    day = params.snapshot_date or logical_date or date.today()
    snapshot = ingest_snapshot(
        get_settings().data_dir,
        day,
        params.rows,
        drift=params.drift,
        corruption=params.corruption,
    )
    return {"snapshot": str(snapshot.path), "day": day.isoformat(), "rows": snapshot.rows}


def validate(snapshot: str) -> dict[str, Any]:
    from ctcd.validation.schema import validate_snapshot

    report = validate_snapshot(Path(snapshot), get_settings().reports_dir)
    return {"report": str(report)}


def train(snapshot: str, conf: Mapping[str, Any], lineage: Mapping[str, str]) -> dict[str, Any]:
    from ctcd.training.train import train as train_model

    params = parse_params(conf)
    _use_tracking()
    with thread_limits():
        result = train_model(
            Path(snapshot),
            experiment=EXPERIMENT,
            model_type=params.model_type,
            hyperparameters=params.effective_hyperparameters,
            holdout_fraction=params.holdout_fraction,
            tags={f"airflow.{key}": value for key, value in lineage.items()},
        )
    return {"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics}


def evaluate(
    candidate: Mapping[str, Any], snapshot: str, conf: Mapping[str, Any]
) -> dict[str, Any]:
    """Score the candidate and the serving champion on the same holdout; log both."""
    import mlflow

    from ctcd.training.evaluate import compare_with_champion

    params = parse_params(conf)
    _use_tracking()
    with thread_limits():
        comparison = compare_with_champion(
            candidate["model_uri"],
            Path(snapshot),
            params.holdout_fraction,
            model_name=get_settings().model_name,
        )
    with mlflow.start_run(run_id=candidate["run_id"]):
        if comparison.champion is not None:
            mlflow.log_metrics({f"champion_{k}": v for k, v in comparison.champion.items()})
            mlflow.set_tag("champion_version", comparison.champion_version)
    return {
        "candidate": comparison.candidate,
        "champion": comparison.champion,
        "champion_version": comparison.champion_version,
    }


def deployment_trigger(evaluation: Mapping[str, Any], conf: Mapping[str, Any]) -> dict[str, Any]:
    from ctcd.training.evaluate import Comparison
    from ctcd.training.gate import decide

    params = parse_params(conf)
    decision = decide(
        Comparison(
            candidate=evaluation["candidate"],
            champion=evaluation["champion"],
            champion_version=evaluation["champion_version"],
        ),
        metric="roc_auc",
        threshold=params.min_roc_auc,
        min_improvement=params.min_improvement,
    )
    return {"deploy": decision.deploy, "reason": decision.reason}


def register(candidate: Mapping[str, Any], lineage: Mapping[str, str]) -> dict[str, Any]:
    from ctcd import registry

    _use_tracking()
    name = get_settings().model_name
    version = registry.register(
        candidate["model_uri"],
        name,
        run_id=candidate["run_id"],
        tags={f"airflow.{key}": value for key, value in lineage.items()},
    )
    return {
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "run_id": candidate["run_id"],
    }


def verify(
    endpoint: str,
    registered: Mapping[str, Any],
    snapshot: str,
    conf: Mapping[str, Any],
    sample_rows: int = 200,
) -> dict[str, Any]:
    """Send holdout rows to the endpoint; the answers must equal the registered model's own,
    and come from the registered version (the ``X-Model-Version`` response header).

    Raises DeploymentError saying what differs.
    """
    import httpx
    import mlflow
    import numpy as np
    import pandas as pd

    from ctcd.data.churn import FEATURES
    from ctcd.data.snapshots import split
    from ctcd.errors import DeploymentError

    params = parse_params(conf)
    _use_tracking()
    _, holdout = split(pd.read_parquet(snapshot), params.holdout_fraction)
    rows = holdout[list(FEATURES)].head(sample_rows)
    with thread_limits():
        expected = np.asarray(mlflow.pyfunc.load_model(registered["model_uri"]).predict(rows))
    body = '{"dataframe_split": ' + rows.to_json(orient="split", index=False) + "}"
    try:
        response = httpx.post(
            f"{endpoint}/invocations",
            content=body,
            timeout=30.0,
            headers={"Content-Type": "application/json"},
        )
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
    mismatches = int((served != expected).sum())
    if mismatches:
        raise DeploymentError(
            f"The endpoint's predictions differ from the registered model's on {mismatches} "
            f"of {len(rows)} holdout rows; not promoting version {registered['version']}."
        )
    return {"rows_checked": len(rows), "version": registered["version"], "endpoint": endpoint}


def promote(registered: Mapping[str, Any]) -> dict[str, Any]:
    from ctcd import registry

    _use_tracking()
    registry.promote(registered["model_name"], registered["version"])
    return {"model_name": registered["model_name"], "champion": registered["version"]}
