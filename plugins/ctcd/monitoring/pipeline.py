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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "retrain": self.retrain, "reason": self.reason,
                "watermark": self.watermark, "report_dir": self.report_dir,
                "mlflow_run_id": self.mlflow_run_id,
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
) -> CheckResult:
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
    spec = load_spec(params.dataset or reference["dataset"])
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
        accuracy, labelled = labels.live_accuracy(ids, window.predictions,
                                                  labels.read_labels(ids, labels_path))
        summary.update(live_accuracy=accuracy, labelled_rows=labelled)
        expected = summary["reference_accuracy"]
        if (accuracy is not None and labelled >= params.min_labels and expected is not None
                and accuracy < expected - params.max_accuracy_drop):
            reasons.append(f"live accuracy {accuracy:.3f} on {labelled} labelled rows is more "
                           f"than {params.max_accuracy_drop} below the holdout accuracy "
                           f"{expected:.3f}")
        status = "drift" if reasons else "ok"
        new_mark = {**mark, "version": version, "rowid": window.last_rowid or after}
    retrain = status == "drift" and params.trigger
    if retrain and _cooling_down(mark.get("last_trigger"), params.cooldown_hours, now):
        retrain = False
        reasons.append(f"retraining was last triggered at {mark['last_trigger']}, within the "
                       f"{params.cooldown_hours} h cool-down: not triggering again")
    summary.update(status=status, retrain=retrain, reasons=reasons)
    directory = reports_dir / _safe(model_name) / f"v{version}" / summary["checked_at"]
    files = report.write_report(directory, summary, result)
    run_id = report.log_report(files, summary, result, client=client)
    reason = (f"model {model_name} v{version}: "
              + ("; ".join(reasons) or f"no drift above the thresholds in {window.rows} rows")
              + f" (drift report {files.html}, MLflow monitoring run {run_id})")
    log.info("monitoring %s v%s: %s", model_name, version, reason)
    return CheckResult(status, retrain, reason, new_mark, summary, str(directory), run_id)


def mark_triggered(watermark: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The watermark once retraining was triggered (the cool-down starts now)."""
    return {**watermark, "last_trigger": (now or datetime.now(UTC)).isoformat()}


def _cooling_down(last: str | None, hours: float, now: datetime) -> bool:
    if not last or hours <= 0:
        return False
    return now - datetime.fromisoformat(last) < timedelta(hours=hours)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
