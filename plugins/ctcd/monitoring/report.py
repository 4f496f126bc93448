"""The drift report: a table (CSV + JSON), a plot (PNG) and one HTML page, kept on disk
under ``$CTCD_HOME/reports/monitoring/<model>/v<version>/<time>/`` and logged to MLflow.

MLflow: each check is a run of the experiment ``model_monitoring`` (tags: model name and
version, the champion's training run id, the verdict; metrics: per-feature PSI, drifted
share, live accuracy; artifacts: the report files). The champion's training run is left
as it was trained: a monitoring run per check keeps a history across hours and versions
that the MLflow UI charts and searches, and the model version's tags
``monitoring.last_run_id`` / ``monitoring.last_status`` lead from the registry to the
latest report.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctcd.monitoring.drift import DriftResult, FeatureDrift

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT = "model_monitoring"
ARTIFACT_DIR = "drift_report"


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    json: Path
    html: Path
    csv: Path | None
    png: Path | None


def write_report(directory: Path, summary: Mapping[str, Any],
                 result: DriftResult | None) -> ReportFiles:
    """Write the report of one check. ``summary``: model, version, window, status, reasons,
    thresholds, live accuracy; ``result``: the comparison (None with too few samples)."""
    directory.mkdir(parents=True, exist_ok=True)
    features = [*(result.features if result else ()),
                *((result.prediction,) if result and result.prediction else ())]
    document = {**summary, "features": [
        {**f.row(), "bins": list(f.bins), "reference_shares": list(f.reference_shares),
         "current_shares": list(f.current_shares)} for f in features]}
    json_path = directory / "drift.json"
    json_path.write_text(json.dumps(document, indent=2, default=str))
    csv_path = png_path = None
    if features:
        import pandas as pd

        csv_path = directory / "drift.csv"
        pd.DataFrame([f.row() for f in features]).to_csv(csv_path, index=False)
        png_path = directory / "drift.png"
        _plot(features, summary, png_path)
    html_path = directory / "report.html"
    html_path.write_text(_html(summary, features, png_path))
    return ReportFiles(directory, json_path, html_path, csv_path, png_path)


def log_report(files: ReportFiles, summary: Mapping[str, Any], result: DriftResult | None, *,
               client: MlflowClient) -> str:
    """Log one check as a run of ``model_monitoring``; returns its run id."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(EXPERIMENT))
    tags = {
        "ctcd.model_name": str(summary["model_name"]),
        "ctcd.model_version": str(summary["model_version"]),
        "ctcd.champion_run_id": str(summary.get("training_run_id") or ""),
        "ctcd.status": str(summary["status"]),
        "ctcd.retrain": str(bool(summary.get("retrain"))).lower(),
        "mlflow.runName": f"{summary['model_name']}-v{summary['model_version']}-"
                          f"{summary['checked_at']}",
    }
    tags.update({f"airflow.{k}": str(v) for k, v in (summary.get("lineage") or {}).items()})
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    metrics: dict[str, float] = {"samples": float(summary.get("samples") or 0)}
    if result is not None:
        metrics["drifted_share"] = result.drifted_share
        for feature in (*result.features, *((result.prediction,) if result.prediction else ())):
            if feature.psi is not None:
                metrics[f"psi.{_metric_name(feature.name)}"] = feature.psi
    if summary.get("live_metric") is not None:
        metrics[f"live_{summary.get('live_metric_name') or 'metric'}"] = float(
            summary["live_metric"])
        metrics["labelled_rows"] = float(summary.get("labelled_rows") or 0)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.log_artifacts(run_id, str(files.directory), ARTIFACT_DIR)
    client.set_terminated(run_id)
    name, version = str(summary["model_name"]), str(summary["model_version"])
    client.set_model_version_tag(name, version, "monitoring.last_run_id", run_id)
    client.set_model_version_tag(name, version, "monitoring.last_status", str(summary["status"]))
    return run_id


def _metric_name(name: str) -> str:
    return name.strip("()").replace(" ", "_") or "unnamed"


def _plot(features: list[FeatureDrift], summary: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    cols = 3
    rows = -(-len(features) // cols)
    figure = Figure(figsize=(cols * 4.2, rows * 2.9), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, feature in zip(axes, features, strict=False):
        positions = range(len(feature.bins))
        ax.bar([p - 0.2 for p in positions], feature.reference_shares, width=0.4,
               label="reference", color="#8da0cb")
        ax.bar([p + 0.2 for p in positions], feature.current_shares, width=0.4,
               label="served", color="#e78ac3" if feature.drifted else "#66c2a5")
        ax.set_xticks(list(positions), feature.bins, rotation=60, ha="right", fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
        psi = "n/a" if feature.psi is None else f"{feature.psi:.3f}"
        ax.set_title(f"{feature.name}: PSI {psi}{'  DRIFT' if feature.drifted else ''}",
                     fontsize=9, color="#b2182b" if feature.drifted else "black")
    for ax in axes[len(features):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{summary['model_name']} v{summary['model_version']}: "
                    f"{summary['status']} ({summary.get('samples', 0)} served rows)")
    figure.savefig(path, dpi=90)


def _html(summary: Mapping[str, Any], features: list[FeatureDrift], png: Path | None) -> str:
    esc = html.escape
    head = (f"<h1>Drift report: {esc(str(summary['model_name']))} version "
            f"{esc(str(summary['model_version']))}</h1>")
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(summary.get(k)))}</td></tr>" for k in (
        "status", "retrain", "samples", "min_samples", "window_start", "window_end",
        "requests", "skipped_requests", "drifted_share", "live_metric_name", "live_metric",
        "labelled_rows", "reference_metric", "waiting_for_data", "checked_at"))
    reasons = "".join(f"<li>{esc(str(r))}</li>" for r in summary.get("reasons") or ())
    table = ""
    if features:
        keys = list(features[0].row())
        header = "".join(f"<th>{esc(k)}</th>" for k in keys)
        body = "".join(
            f"<tr class='{'drift' if f.drifted else ''}'>"
            + "".join(f"<td>{esc(_cell(v))}</td>" for v in f.row().values()) + "</tr>"
            for f in features)
        table = f"<table class='grid'><tr>{header}</tr>{body}</table>"
    image = ""
    if png is not None:
        data = base64.b64encode(png.read_bytes()).decode()
        image = f"<img alt='reference vs served shares' src='data:image/png;base64,{data}'>"
    style = ("<style>body{font-family:sans-serif} table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
             "tr.drift{background:#fde0ef}</style>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title>"
            f"{style}</head><body>{head}<table>{facts}</table><ul>{reasons}</ul>{table}"
            f"{image}</body></html>")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
