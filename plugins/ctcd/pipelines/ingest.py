"""The first step of a training run: pick the window of partitions to train on and copy
each into a local snapshot.

A window ends with the newest partition of the source (or ``snapshot_date``) and reaches
back ``window_partitions`` partitions or ``window_days`` days. The watermark (the newest
partition a finished run of this model trained on, kept as MLflow run tags) says whether
the window holds anything new: a window whose newest partition was trained on already is
skipped. Each partition is copied batch by batch (bounded memory) into its own snapshot,
which every later step of the run reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.spec import DatasetSpec, load_spec
from ctcd.errors import DataValidationError
from ctcd.models.definition import ModelDefinition
from ctcd.settings import get_settings
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


def window(available: list[date], newest: date, params: ContinuousTrainingParams) -> list[date]:
    """The partitions a run trains on, oldest first, ending with ``newest``."""
    upto = [day for day in available if day <= newest]
    if params.window_days is not None:
        start = newest - timedelta(days=params.window_days - 1)
        return [day for day in upto if day >= start]
    return upto[-(params.window_partitions or 1):]


def new_partitions(definition: ModelDefinition, conf: Mapping[str, Any],
                   tracking: Tracking) -> list[date]:
    """Partitions of the model's source newer than the last one it trained on (what a
    retraining would have to learn from); empty when there is nothing new."""
    from ctcd.data.watermark import last_trained

    params = parse_params(conf, definition)
    spec = load_spec(definition.dataset)
    source = source_for(params, spec)
    last = last_trained(tracking, definition.model_name, spec.name, source.id)
    return [day for day in source.partitions() if last is None or day > last]


def ingest(definition: ModelDefinition, conf: Mapping[str, Any],
           tracking: Tracking) -> dict[str, Any]:
    """Check the run's parameters and the trainer, pick the window, copy it into snapshots.

    Raises NothingNew when its newest partition was trained on already, and
    DataValidationError when that partition is older than the last one trained on (unless
    ``force``).
    """
    from ctcd.data.snapshots import snapshot_path
    from ctcd.data.sources import copy_partition
    from ctcd.data.watermark import last_trained
    from ctcd.training.trainers import check

    params = parse_params(conf, definition)
    check(definition, params.effective_estimator(definition),
          params.effective_hyperparameters(definition), params.seed)
    spec = load_spec(definition.dataset)
    source = source_for(params, spec)
    available = source.partitions()
    if not available:
        raise DataValidationError(
            f"No partitions of data set {spec.name!r} in {source.id}: expected folders "
            "date=YYYY-MM-DD/ holding *.parquet or *.csv files (or rows in the SQL source). "
            f"Land one, e.g. `ctcd data produce --dataset {spec.name} --date 2026-11-20`."
        )
    day = params.snapshot_date or available[-1]
    if day not in available:
        raise DataValidationError(
            f"Partition {day} of {spec.name!r} is not in {source.id}; available: "
            f"{[d.isoformat() for d in available[-10:]]}."
        )
    last = last_trained(tracking, definition.model_name, spec.name, source.id)
    if last is not None and not params.force:
        if day == last:
            raise NothingNew(
                f"Partition {day} of {spec.name!r} from {source.id} was trained on already "
                f"(by {definition.model_name}) and no newer one has landed: nothing to do. "
                "Trigger with force=true to retrain on it."
            )
        if day < last:
            raise DataValidationError(
                f"Partition {day} of {spec.name!r} is older than {last}, the last partition "
                f"{definition.model_name} trained on from {source.id}: training on it would "
                "roll the model back in time. Land a newer partition, or trigger with "
                "force=true to train on it."
            )
    days = window(available, day, params)
    snapshots: list[str] = []
    files: list[str] = []
    rows = 0
    for each in days:
        copied = copy_partition(
            source, each, spec, snapshot_path(get_settings().data_dir, spec.name, each)
        )
        snapshots.append(str(copied.path))
        files.extend(copied.files)
        rows += copied.rows
        log.info("Ingested %s rows of %s partition %s from %s", copied.rows, spec.name, each,
                 source.id)
    reason = params.trigger_reason or pending_retrain(tracking, definition.model_name)
    if len(days) > 1:
        log.info("Training window: %d partitions, %s to %s, %d rows", len(days), days[0],
                 days[-1], rows)
    return {
        "model": definition.key,
        "model_name": definition.model_name,
        "snapshot": snapshots[-1],
        "snapshots": snapshots,
        "dataset": spec.name,
        "day": day.isoformat(),
        "days": [d.isoformat() for d in days],
        "rows": rows,
        "source": source.id,
        "files": files,
        "last_trained": last.isoformat() if last else None,
        "trigger_reason": reason,
    }


def frame(ingested: Mapping[str, Any]) -> pd.DataFrame:
    """Every row of the run's window, oldest partition first."""
    paths = [Path(p) for p in ingested.get("snapshots") or [ingested["snapshot"]]]
    frames = [pd.read_parquet(path) for path in paths]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def holdout_split(definition: ModelDefinition, ingested: Mapping[str, Any],
                  conf: Mapping[str, Any]) -> tuple[ContinuousTrainingParams, DatasetSpec,
                                                    pd.DataFrame, pd.DataFrame]:
    """The run's params and spec, and its window cut into (training rows, holdout) by the
    stable hash of the id column: every step of a run sees the same holdout."""
    from ctcd.data.snapshots import split

    params = parse_params(conf, definition)
    spec = load_spec(definition.dataset)
    train_set, holdout = split(frame(ingested), params.holdout_fraction, spec.id_column)
    return params, spec, train_set, holdout


# -- a retraining asked for when there was nothing new to train on -------------------------

PENDING_TAG = "ctcd.retrain_pending"


def pending_retrain(tracking: Tracking, model_name: str) -> str | None:
    """The reason monitoring left on the registered model when it saw drift but no new
    data to retrain on; the next run that trains carries it."""
    from mlflow.exceptions import MlflowException

    try:
        tags = tracking.client.get_registered_model(model_name).tags
    except MlflowException:
        return None
    return tags.get(PENDING_TAG) or None


def set_pending_retrain(tracking: Tracking, model_name: str, reason: str | None) -> None:
    """Leave (or, with ``None``, clear) the reason for the next run that trains."""
    from mlflow.exceptions import MlflowException

    try:
        if reason:
            tracking.client.set_registered_model_tag(model_name, PENDING_TAG, reason[:4000])
        else:
            tracking.client.delete_registered_model_tag(model_name, PENDING_TAG)
    except MlflowException:
        if reason:
            raise
