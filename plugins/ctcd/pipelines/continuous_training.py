"""The steps of the continuous_training DAG, free of Airflow so they are tested directly.

Each step takes plain values (and the :class:`~ctcd.tracking.Tracking` to use) and returns
a small JSON-able dict (paths, URIs, ids, metrics) that Airflow passes on through XCom;
data frames and models never leave a step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ctcd.data.spec import DatasetSpec, load_spec
from ctcd.errors import DataValidationError
from ctcd.settings import get_settings, thread_limits
from ctcd.tracking import Tracking
from ctcd.training.params import ContinuousTrainingParams, parse_params

log = logging.getLogger(__name__)


class NothingNew(Exception):
    """The source has no partition that was not trained on already: the run is skipped."""


def source_for(params: ContinuousTrainingParams, spec: DatasetSpec) -> Any:
    from ctcd.data.sources import LandingSource, SqlSource, default_landing_uri

    if params.source == "sql":
        query = params.sql_query or f"SELECT * FROM {spec.name}"
        return SqlSource(params.sql_conn_id, query, spec)
    uri = params.landing_uri or default_landing_uri(spec.name)
    return LandingSource(uri, spec, conn_id=params.landing_conn_id or None)


def ingest(conf: Mapping[str, Any], tracking: Tracking) -> dict[str, Any]:
    """Check the run's parameters, pick the partition, copy it into a local snapshot.

    The newest partition of the source is taken, unless ``snapshot_date`` names one.
    Raises NothingNew when it was trained on already, and DataValidationError when it is
    older than the last one trained on (unless ``force``).
    """
    from ctcd.data.snapshots import snapshot_path
    from ctcd.data.sources import copy_partition
    from ctcd.data.watermark import last_trained

    params = parse_params(conf)
    spec = load_spec(params.dataset)
    source = source_for(params, spec)
    available = source.partitions()
    if not available:
        raise DataValidationError(
            f"No partitions of data set {spec.name!r} in {source.id}: expected folders "
            "date=YYYY-MM-DD/ holding *.parquet or *.csv files (or rows in the SQL source). "
            "Land one, e.g. `ctcd data produce --date 2026-11-20`."
        )
    day = params.snapshot_date or available[-1]
    if day not in available:
        raise DataValidationError(
            f"Partition {day} of {spec.name!r} is not in {source.id}; available: "
            f"{[d.isoformat() for d in available[-10:]]}."
        )
    last = last_trained(tracking, spec.name, source.id)
    if last is not None and not params.force:
        if day == last:
            raise NothingNew(
                f"Partition {day} of {spec.name!r} from {source.id} was trained on already "
                "and no newer one has landed: nothing to do. Trigger with force=true to "
                "retrain on it."
            )
        if day < last:
            raise DataValidationError(
                f"Partition {day} of {spec.name!r} is older than {last}, the last partition "
                f"trained on from {source.id}: training on it would roll the model back in "
                "time. Land a newer partition, or trigger with force=true to train on it."
            )
    copied = copy_partition(
        source, day, spec, snapshot_path(get_settings().data_dir, spec.name, day)
    )
    log.info("Ingested %s rows of %s partition %s from %s", copied.rows, spec.name, day, source.id)
    return {
        "snapshot": str(copied.path),
        "dataset": spec.name,
        "day": day.isoformat(),
        "rows": copied.rows,
        "source": source.id,
        "files": list(copied.files),
        "last_trained": last.isoformat() if last else None,
    }


def validate(
    ingested: Mapping[str, Any],
    tracking: Tracking | None = None,
    *,
    lineage: Mapping[str, str] | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Run the data set's GX checkpoint on the snapshot; fail closed.

    A failed result is logged to MLflow (a run of its own, tagged ``ctcd.stage=validation``)
    before the error propagates; a passing one is logged later with the trained model.
    """
    from ctcd.validation.checkpoint import ValidationFailed, validate_snapshot

    spec = load_spec(ingested["dataset"])
    try:
        outcome = validate_snapshot(
            Path(ingested["snapshot"]),
            spec,
            partition=date.fromisoformat(ingested["day"]),
            home=get_settings().home,
            today=today,
        )
    except ValidationFailed as err:
        if tracking is not None:
            _log_failed_validation(tracking, ingested, err, lineage or {})
        raise
    return outcome.to_dict()


def _log_failed_validation(
    tracking: Tracking, ingested: Mapping[str, Any], err: Any, lineage: Mapping[str, str]
) -> None:
    from ctcd.data import watermark

    outcome = err.outcome
    run = tracking.client.create_run(
        tracking.experiment_id(),
        run_name=f"validation-failed-{ingested['dataset']}-{ingested['day']}",
        tags={
            watermark.DATASET: ingested["dataset"],
            watermark.SOURCE: ingested["source"],
            watermark.PARTITION: ingested["day"],
            watermark.STAGE: "validation",
            "ctcd.validation": "failed",
            **{f"airflow.{k}": v for k, v in lineage.items()},
        },
    )
    run_id = run.info.run_id
    tracking.log_artifacts(run_id, _validation_artifacts(outcome.report, outcome.docs_page))
    tracking.client.log_metric(run_id, "failed_expectations", len(outcome.failures))
    tracking.client.set_terminated(run_id, "FAILED")
    err.message += f" Logged to MLflow run {run_id}."
    err.args = (err.message,)


def _validation_artifacts(report: str | Path, docs_page: str | Path | None) -> dict[str, Path]:
    artifacts = {"validation": Path(report)}
    if docs_page:
        artifacts["validation/data_docs"] = Path(docs_page)
    return artifacts


def train(
    ingested: Mapping[str, Any],
    validation: Mapping[str, Any],
    conf: Mapping[str, Any],
    lineage: Mapping[str, str],
    tracking: Tracking,
) -> dict[str, Any]:
    """Train on the validated snapshot; the validation result goes with the model."""
    from ctcd.data.watermark import training_tags
    from ctcd.training.train import train as train_model

    params = parse_params(conf)
    spec = load_spec(ingested["dataset"])
    tags = {
        **{f"airflow.{key}": value for key, value in lineage.items()},
        **training_tags(spec.name, ingested["source"], date.fromisoformat(ingested["day"])),
        "ctcd.validation": "passed",
    }
    with thread_limits():
        result = train_model(
            tracking,
            Path(ingested["snapshot"]),
            spec,
            model_type=params.model_type,
            hyperparameters=params.effective_hyperparameters,
            holdout_fraction=params.holdout_fraction,
            tags=tags,
            artifacts=_validation_artifacts(validation["report"], validation.get("docs_page")),
        )
    return {"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics}


def evaluate(
    candidate: Mapping[str, Any],
    ingested: Mapping[str, Any],
    conf: Mapping[str, Any],
    tracking: Tracking,
) -> dict[str, Any]:
    """Score the candidate and the serving champion on the same holdout; log both."""
    from ctcd.training.evaluate import compare_with_champion

    params = parse_params(conf)
    with thread_limits():
        comparison = compare_with_champion(
            tracking,
            candidate["model_uri"],
            Path(ingested["snapshot"]),
            load_spec(ingested["dataset"]),
            params.holdout_fraction,
            model_name=get_settings().model_name,
        )
    if comparison.champion is not None:
        for key, value in comparison.champion.items():
            tracking.client.log_metric(candidate["run_id"], f"champion_{key}", value)
        tracking.client.set_tag(
            candidate["run_id"], "champion_version", comparison.champion_version
        )
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


def register(
    candidate: Mapping[str, Any], lineage: Mapping[str, str], tracking: Tracking
) -> dict[str, Any]:
    name = get_settings().model_name
    version = tracking.register(
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
    ingested: Mapping[str, Any],
    conf: Mapping[str, Any],
    tracking: Tracking,
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

    from ctcd.data.snapshots import split
    from ctcd.errors import DeploymentError

    params = parse_params(conf)
    spec = load_spec(ingested["dataset"])
    _, holdout = split(
        pd.read_parquet(ingested["snapshot"]), params.holdout_fraction, spec.id_column
    )
    rows = holdout[list(spec.feature_names)].head(sample_rows)
    with thread_limits(), tracking.active():
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


def promote(registered: Mapping[str, Any], tracking: Tracking) -> dict[str, Any]:
    """Make the verified version the champion, then tell the running streaming scorers
    that follow ``models:/<name>@champion`` to load it now."""
    tracking.promote(registered["model_name"], registered["version"])
    return {"model_name": registered["model_name"], "champion": registered["version"],
            "scorers_told": tell_scorers(registered["model_name"])}


def tell_scorers(model_name: str) -> int:
    """Ask every running scorer of the configured deployer that follows ``model_name``'s
    champion to check the alias now (through the deployer contract's ``reload_scorer``);
    returns how many replicas were asked. Each one swaps the new version in between batches,
    so nothing is lost. A scorer that cannot be reached is only logged: the alias has moved,
    and every scorer also checks it on its own every ``reload_interval``."""
    from ctcd.deployers import SupportsScorers, get_deployer

    deployer = get_deployer()
    if not isinstance(deployer, SupportsScorers):
        return 0
    told = 0
    uri = f"models:/{model_name}@champion"
    for scorer in deployer.find_scorers(model_uri=uri, running=True):
        try:
            told += deployer.reload_scorer(scorer.name)
        except Exception as err:  # one unreachable scorer must not fail promote
            log.warning("could not tell scorer %s about the new champion (%s); it will "
                        "load it within its reload interval", scorer.name, err)
    if told:
        log.info("told %d scorer replica(s) following %s to load the new champion", told, uri)
    return told
