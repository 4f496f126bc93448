"""One monitoring check, free of Airflow: champion -> reference -> served window -> drift
and live accuracy -> report -> decision. The ``model_monitoring`` DAG keeps the watermark
between checks and triggers retraining; everything else happens here.

The watermark is a small JSON-able dict: ``{"version": <champion version checked>,
"rowid": <last request-log rowid read>, "last_trigger": <ISO time of the last retraining
trigger>}``; the DAG sets ``last_trigger`` (``mark_triggered``) when it does trigger. A new
champion version starts a new window; too few samples leave the window open, so they add
up over the following checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctcd.monitoring.params import MonitoringParams

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    status: str  # no_champion | no_reference | insufficient_data | ok | drift
    retrain: bool
    reason: str
    watermark: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    report_dir: str | None = None
    mlflow_run_id: str | None = None
    waiting_for_data: bool = False  # drift, but nothing new to retrain on yet

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "retrain": self.retrain, "reason": self.reason,
                "watermark": self.watermark, "report_dir": self.report_dir,
                "mlflow_run_id": self.mlflow_run_id, "waiting_for_data": self.waiting_for_data,
                "samples": self.summary.get("samples"),
                "model_name": self.summary.get("model_name"),
                "model_version": self.summary.get("model_version")}


def check(
    params: MonitoringParams,
    watermark: Mapping[str, Any] | None,
    *,
    client: MlflowClient,
    request_log: Path,
    labels_path: Path,
    reports_dir: Path,
    model_name: str,
    lineage: Mapping[str, str] | None = None,
    now: datetime | None = None,
    new_data: Callable[[], Sequence[date]] | None = None,
) -> CheckResult:
    """One check of ``model_name``'s champion. ``new_data`` lists the partitions landed
    since the model last trained: drift with nothing new to learn from does not retrain
    (it would train on what it already knows) and leaves the cool-down alone; it says
    "drift seen; waiting for new data" and the next partition that lands retrains."""
    from mlflow.exceptions import MlflowException

    from ctcd.data.spec import load_spec
    from ctcd.monitoring import drift, labels, report, served
    from ctcd.monitoring.reference import ReferenceNotFound, load_reference

    now = now or datetime.now(UTC)
    mark = dict(watermark or {})
    try:
        champion = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(err).lower():
            raise  # the tracking server failed: let the task retry
        return CheckResult("no_champion", False, f"{model_name} has no champion version yet; "
                           "nothing is served to monitor", mark)
    version = str(champion.version)
    try:
        reference = load_reference(str(champion.run_id), client=client)
    except ReferenceNotFound as err:
        return CheckResult("no_reference", False, err.message, mark)
    spec = load_spec(reference["dataset"])
    after = 0 if params.full_window or mark.get("version") != version else int(mark["rowid"])
    if after > served.max_rowid(request_log):
        after = 0  # the log was reset (a new file): start over
    window = served.read_window(request_log, model_name, version, spec.feature_names,
                                after_rowid=after, max_rows=params.max_rows)
    summary: dict[str, Any] = {
        "model_name": model_name, "model_version": version,
        "training_run_id": champion.run_id, "dataset": spec.name,
        "checked_at": now.strftime("%Y%m%dT%H%M%SZ"), "samples": window.rows,
        "min_samples": params.min_samples, "requests": window.requests,
        "skipped_requests": window.skipped, "window_start": window.first_ts,
        "window_end": window.last_ts, "request_log": str(request_log),
        "thresholds": params.model_dump(include={"psi_threshold", "ks_alpha", "ks_statistic",
                                                  "drifted_share", "max_accuracy_drop"}),
        "reference_accuracy": reference["predictions"].get("holdout_accuracy"),
        "reference_metric": (reference["predictions"].get("holdout_metric") or {}).get("value"),
        "live_metric_name": _live_metric_name(reference),
        "lineage": dict(lineage or {}),
    }
    result: drift.DriftResult | None = None
    reasons: list[str] = []
    if window.rows < params.min_samples:
        status = "insufficient_data"
        reasons.append(f"only {window.rows} served rows of version {version} since the last "
                       f"check (at least {params.min_samples} needed): no verdict, no retraining")
        if not request_log.exists():
            reasons.append(f"there is no request log at {request_log}: start model servers "
                           "with CTCD_SERVER_REQUEST_LOG_SAMPLE_RATE > 0 (and the same "
                           "CTCD_SERVER_REQUEST_LOG_PATH) to monitor them")
        new_mark = {**mark, "version": version, "rowid": after}
    else:
        result = drift.compare(reference, window.frame, window.predictions, params.thresholds())
        summary["drifted_share"] = round(result.drifted_share, 4)
        reasons.extend(result.reasons)
        ids = labels.row_ids(window.frame, spec)
        name = summary["live_metric_name"]
        live, labelled = labels.live_metric_of(_task(reference), ids, window.predictions,
                                               labels.read_labels(ids, labels_path))
        summary.update(live_metric=live, labelled_rows=labelled)
        if name == "accuracy":
            summary["live_accuracy"] = live
        expected = summary["reference_metric"]
        if expected is None and name == "accuracy":
            expected = summary["reference_accuracy"]
        if live is not None and labelled >= params.min_labels and expected is not None:
            reasons.extend(_degraded(name, live, float(expected), labelled, params))
        status = "drift" if reasons else "ok"
        new_mark = {**mark, "version": version, "rowid": window.last_rowid or after}
    retrain = status == "drift" and params.trigger
    if retrain and _cooling_down(mark.get("last_trigger"), params.cooldown_hours, now):
        retrain = False
        reasons.append(f"retraining was last triggered at {mark['last_trigger']}, within the "
                       f"{params.cooldown_hours} h cool-down: not triggering again")
    waiting = False
    if retrain and new_data is not None and not list(new_data()):
        retrain, waiting = False, True
        reasons.append("drift seen; waiting for new data: no partition has landed since the "
                       "model last trained, so retraining now would learn nothing new; the "
                       "next partition that lands retrains it, with this reason")
    summary["waiting_for_data"] = waiting
    summary.update(status=status, retrain=retrain, reasons=reasons)
    directory = reports_dir / _safe(model_name) / f"v{version}" / summary["checked_at"]
    files = report.write_report(directory, summary, result)
    run_id = report.log_report(files, summary, result, client=client)
    reason = (f"model {model_name} v{version}: "
              + ("; ".join(reasons) or f"no drift above the thresholds in {window.rows} rows")
              + f" (drift report {files.html}, MLflow monitoring run {run_id})")
    log.info("monitoring %s v%s: %s", model_name, version, reason)
    return CheckResult(status, retrain, reason, new_mark, summary, str(directory), run_id,
                       waiting_for_data=waiting)


def _task(reference: Mapping[str, Any]) -> str:
    predictions = reference.get("predictions") or {}
    return str(predictions.get("task") or
               ("binary" if predictions.get("kind") == "categorical" else "regression"))


def _live_metric_name(reference: Mapping[str, Any]) -> str:
    from ctcd.models.tasks import LIVE_METRIC

    return LIVE_METRIC[_task(reference)]  # type: ignore[index]


def _degraded(name: str, live: float, expected: float, labelled: int,
              params: MonitoringParams) -> list[str]:
    """A reason to retrain when the live metric fell too far from the holdout's."""
    if name == "rmse":
        limit = expected * (1 + params.max_error_increase)
        if live > limit:
            return [f"live RMSE {live:.4g} on {labelled} labelled rows is more than "
                    f"{params.max_error_increase:.0%} above the holdout RMSE {expected:.4g}"]
        return []
    if live < expected - params.max_accuracy_drop:
        what = "accuracy" if name == "accuracy" else "macro F1"
        return [f"live {what} {live:.3f} on {labelled} labelled rows is more than "
                f"{params.max_accuracy_drop} below the holdout {what} {expected:.3f}"]
    return []


def mark_triggered(watermark: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The watermark once retraining was triggered (the cool-down starts now)."""
    return {**watermark, "last_trigger": (now or datetime.now(UTC)).isoformat()}


def _cooling_down(last: str | None, hours: float, now: datetime) -> bool:
    if not last or hours <= 0:
        return False
    return now - datetime.fromisoformat(last) < timedelta(hours=hours)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
