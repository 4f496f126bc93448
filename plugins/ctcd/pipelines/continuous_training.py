"""The steps of a model's training DAG, free of Airflow so they are tested directly.

Each step takes the model's definition (its model file), plain values and the
:class:`~ctcd.tracking.Tracking` to use, and returns a small JSON-able dict (paths, URIs,
ids, metrics) that Airflow passes on through XCom; data frames and models never leave a
step. ``ingest`` is in :mod:`ctcd.pipelines.ingest`, ``verify`` in
:mod:`ctcd.pipelines.verify`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ctcd.data.spec import load_spec
from ctcd.models.definition import ModelDefinition
from ctcd.pipelines.ingest import NothingNew, holdout_split, ingest, set_pending_retrain
from ctcd.pipelines.verify import verify
from ctcd.settings import get_settings, thread_limits
from ctcd.tracking import Tracking
from ctcd.training.params import parse_params

log = logging.getLogger(__name__)

__all__ = [
    "NothingNew", "deployment_trigger", "evaluate", "ingest", "promote", "register", "train",
    "validate", "verify",
]


def validate(
    ingested: Mapping[str, Any],
    tracking: Tracking | None = None,
    *,
    lineage: Mapping[str, str] | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Run the data set's GX checkpoint on every partition of the window; fail closed.

    A failed result is logged to MLflow (a run of its own, tagged ``ctcd.stage=validation``)
    before the error propagates; a passing one is logged later with the trained model.
    Returns the newest partition's result, with every partition's report.
    """
    from ctcd.validation.checkpoint import ValidationFailed, validate_snapshot

    spec = load_spec(ingested["dataset"])
    snapshots = ingested.get("snapshots") or [ingested["snapshot"]]
    days = ingested.get("days") or [ingested["day"]]
    results = []
    for snapshot, day in zip(snapshots, days, strict=True):
        try:
            outcome = validate_snapshot(
                Path(snapshot), spec, partition=date.fromisoformat(day),
                home=get_settings().home, today=today,
            )
        except ValidationFailed as err:
            if tracking is not None:
                _log_failed_validation(tracking, {**ingested, "day": day}, err, lineage or {})
            raise
        results.append(outcome.to_dict())
    newest = dict(results[-1])
    newest["partitions"] = [{"day": day, "report": r["report"], "docs_page": r["docs_page"]}
                            for day, r in zip(days, results, strict=True)]
    newest["evaluated"] = sum(int(r["evaluated"]) for r in results)
    return newest


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
            **({watermark.MODEL: ingested["model_name"]} if "model_name" in ingested else {}),
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
    definition: ModelDefinition,
    ingested: Mapping[str, Any],
    validation: Mapping[str, Any],
    conf: Mapping[str, Any],
    lineage: Mapping[str, str],
    tracking: Tracking,
) -> dict[str, Any]:
    """Train on the window's training rows; the validation result, the reference statistics
    and the lineage go with the model. The watermark tags come last."""
    from ctcd.compiled.version import log_holdout
    from ctcd.data.watermark import training_tags
    from ctcd.monitoring.reference import log_training_reference
    from ctcd.training.train import finish
    from ctcd.training.train import train as train_model

    params, spec, train_set, holdout = holdout_split(definition, ingested, conf)
    if ingested.get("trigger_reason") and not params.trigger_reason:
        params = params.model_copy(update={"trigger_reason": ingested["trigger_reason"]})
    artifacts = _validation_artifacts(validation["report"], validation.get("docs_page"))
    with thread_limits():
        result = train_model(
            tracking, train_set, definition, spec, params,
            snapshots=list(ingested.get("snapshots") or [ingested["snapshot"]]),
            holdout_rows=len(holdout), artifacts=artifacts,
        )
        # Reference statistics of the features and predictions, logged with the model
        # (reference/statistics.json) so drift checks never re-read the training data.
        log_training_reference(result.run_id, result.model, train_set, holdout, spec,
                               task=definition.resolved_task, client=tracking.client)
    # Holdout rows kept with the run: a compiled model is verified on them at registration
    # (and by `ctcd models compile` later).
    log_holdout(tracking.client, result.run_id, holdout, list(spec.feature_names))
    finish(tracking, result.run_id, {
        **{f"airflow.{key}": value for key, value in lineage.items()},
        "ctcd.validation": "passed",
        # where the result and its Data Docs page are kept (the lineage shows them)
        **({"ctcd.validation_report": str(validation["report"])} if validation.get("report")
           else {}),
        **({"ctcd.data_docs": str(validation["docs_page"])} if validation.get("docs_page")
           else {}),
        **({"ctcd.validation_expectations": str(validation["evaluated"])}
           if validation.get("evaluated") else {}),
        **training_tags(definition.model_name, spec.name, ingested["source"],
                        date.fromisoformat(ingested["day"])),
    })
    if params.trigger_reason:
        set_pending_retrain(tracking, definition.model_name, None)
    log.info("Trained %s with %s: MLflow run %s (%s flavor)", definition.model_name,
             definition.trainer.function or params.effective_estimator(definition),
             result.run_id, result.flavor)
    return {"run_id": result.run_id, "model_uri": result.model_uri, "flavor": result.flavor,
            "trigger_reason": params.trigger_reason}


def evaluate(
    definition: ModelDefinition,
    candidate: Mapping[str, Any],
    ingested: Mapping[str, Any],
    conf: Mapping[str, Any],
    tracking: Tracking,
) -> dict[str, Any]:
    """Score the candidate and the serving champion on the same holdout; log both."""
    from ctcd.training.evaluate import compare_with_champion

    _, spec, _, holdout = holdout_split(definition, ingested, conf)
    with thread_limits():
        comparison = compare_with_champion(
            tracking, candidate["model_uri"], candidate["run_id"], holdout, spec,
            definition.resolved_task, model_name=definition.model_name,
        )
    if comparison.champion is not None:
        for key, value in comparison.champion.items():
            tracking.client.log_metric(candidate["run_id"], f"champion_{key}", value)
        tracking.client.set_tag(
            candidate["run_id"], "champion_version", comparison.champion_version
        )
    log.info("Holdout (%d rows): candidate %s; champion %s %s", len(holdout),
             comparison.candidate, comparison.champion_version, comparison.champion)
    return {
        "metric": definition.gate_metric,
        "candidate": comparison.candidate,
        "champion": comparison.champion,
        "champion_version": comparison.champion_version,
        "holdout_rows": len(holdout),
    }


def deployment_trigger(
    definition: ModelDefinition, evaluation: Mapping[str, Any], conf: Mapping[str, Any]
) -> dict[str, Any]:
    from ctcd.models.tasks import metric
    from ctcd.training.evaluate import Comparison
    from ctcd.training.gate import decide

    params = parse_params(conf, definition)
    decision = decide(
        Comparison(
            candidate=evaluation["candidate"],
            champion=evaluation["champion"],
            champion_version=evaluation["champion_version"],
        ),
        metric=metric(definition.resolved_task, definition.gate_metric),
        threshold=params.threshold,
        min_improvement=params.min_improvement,
    )
    return {"deploy": decision.deploy, "reason": decision.reason}


def register(
    definition: ModelDefinition, candidate: Mapping[str, Any], lineage: Mapping[str, str],
    tracking: Tracking, *, decision: str | None = None,
) -> dict[str, Any]:
    name = definition.model_name
    tags = {f"airflow.{key}": value for key, value in lineage.items()}
    if decision:
        tags["ctcd.gate"] = decision[:5000]
    version = tracking.register(candidate["model_uri"], name, run_id=candidate["run_id"],
                                tags=tags)
    compiled = compile_registered(name, version, tracking)
    return {
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "run_id": candidate["run_id"],
        "compiled": compiled,
    }


def compile_registered(name: str, version: str, tracking: Tracking) -> str:
    """Compile the new version and verify it on the training run's holdout rows; the graph
    goes beside the model and the outcome into its tags. A model that does not convert or
    verify is served as it is: that is logged, not an error. Returns the outcome tag."""
    from mlflow.exceptions import MlflowException

    from ctcd.compiled.version import TAG, compile_version
    from ctcd.serving.errors import ServingError

    try:
        with thread_limits():
            outcome = compile_version(name, version, tracking=tracking)
    except (MlflowException, ServingError, OSError) as err:
        # the version is registered: it is served uncompiled rather than registered twice
        # by a retry of this task
        log.warning("%s version %s was not compiled (%s: %s); it will be served as it is, "
                    "`ctcd models compile %s %s` tries again", name, version,
                    type(err).__name__, err, name, version)
        return "none"
    manifest = outcome.manifest
    if manifest.verified and not manifest.faster:
        log.info("Compiled %s version %s to ONNX and verified it (%s), but it is served "
                 "uncompiled: not faster than the original at %s", name, version,
                 manifest.reason, manifest.slower_at())
    elif manifest.verified:
        log.info("Compiled %s version %s to ONNX (%s): %s; speedup %s", name, version,
                 manifest.converter, manifest.reason, dict(manifest.speedup))
    else:
        log.warning("%s version %s will be served uncompiled: %s", name, version,
                    manifest.reason)
    return outcome.tags()[TAG]


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
