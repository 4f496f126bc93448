"""The model_monitoring run parameters and thresholds: one pydantic model for the Params
form and for the in-task check. Imported when Airflow parses the DAG file: keep it light."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MonitoringParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_samples: int = Field(
        default=500, ge=1, description="Fewest served rows a verdict needs; with fewer the check "
        "says so, keeps its window open for the next run and never retrains.")
    max_rows: int = Field(
        default=50_000, ge=1, description="Most served rows read per check (the newest).")
    psi_threshold: float = Field(
        default=0.2, gt=0, description="PSI at or above which a feature or the predictions "
        "drifted (0.1-0.2 is moderate).")
    ks_alpha: float = Field(
        default=0.01, gt=0, lt=1, description="KS significance level for numeric features.")
    ks_statistic: float = Field(
        default=0.1, gt=0, le=1, description="Smallest KS statistic that counts as drift.")
    drifted_share: float = Field(
        default=0.3, gt=0, le=1, description="Retrain when at least this share of the features "
        "drifted (or the predictions did).")
    min_labels: int = Field(
        default=200, ge=1, description="Fewest labelled rows live accuracy needs.")
    max_accuracy_drop: float = Field(
        default=0.05, ge=0, le=1, description="Classifiers: retrain when live accuracy (macro "
        "F1 for multiclass) falls this far below its holdout value at training.")
    max_error_increase: float = Field(
        default=0.25, ge=0, description="Regressions: retrain when the live RMSE rises this "
        "share above the holdout RMSE at training (0.25: 25% worse).")
    cooldown_hours: float = Field(
        default=6.0, ge=0, description="Do not trigger retraining again within this many hours "
        "of the last trigger (0: no cool-down).")
    trigger: bool = Field(
        default=True, description="Trigger continuous_training on drift (off: report only).")
    full_window: bool = Field(
        default=False, description="Read every logged request of the champion version, not "
        "only those since the last check.")

    def thresholds(self) -> Any:
        from ctcd.monitoring.drift import Thresholds

        return Thresholds(psi=self.psi_threshold, ks_alpha=self.ks_alpha,
                          ks_statistic=self.ks_statistic, drifted_share=self.drifted_share)


def parse_params(conf: Mapping[str, Any]) -> MonitoringParams:
    """Validate a run's params; raise InvalidParams naming each bad parameter."""
    from ctcd.params import validate_params

    return validate_params(MonitoringParams, conf, "monitoring")


def airflow_params(defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Typed Airflow Params (JSON schema per field) built from the pydantic model, with a
    model file's ``monitoring.params`` as defaults."""
    from ctcd.params import airflow_params as from_model

    return from_model(MonitoringParams, defaults)
