"""The watermark: which partitions of a data set were already trained on.

It is kept as tags of the MLflow training runs, not in a separate store. A training run is
tagged with the model, the data set, the source and the newest partition it consumed, once
its model and reference statistics are logged, so the watermark can never claim a partition
that no finished run was trained on, survives a reset of Airflow's metadata database, and
is auditable in the MLflow UI (search ``tags.`ctcd.partition` = '2026-11-20'``). An Airflow
Variable would be a second copy of that fact that could disagree with the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Final

from ctcd.tracking import Tracking

MODEL: Final = "ctcd.model"
DATASET: Final = "ctcd.dataset"
SOURCE: Final = "ctcd.source"
PARTITION: Final = "ctcd.partition"
STAGE: Final = "ctcd.stage"


def training_tags(model: str, dataset: str, source: str, partition: date) -> dict[str, str]:
    return {
        MODEL: model,
        DATASET: dataset,
        SOURCE: source,
        PARTITION: partition.isoformat(),
        STAGE: "training",
    }


def last_trained(tracking: Tracking, model: str, dataset: str, source: str) -> date | None:
    """The newest partition of ``dataset`` from ``source`` a finished training run of
    ``model`` used (two models of one data set each keep their own)."""
    runs = tracking.search_runs(
        f"tags.`{MODEL}` = '{_quote(model)}' and "
        f"tags.`{DATASET}` = '{_quote(dataset)}' and tags.`{SOURCE}` = '{_quote(source)}' "
        f"and tags.`{STAGE}` = 'training' and attributes.status = 'FINISHED'"
    )
    days = [date.fromisoformat(run.data.tags[PARTITION]) for run in runs]
    return max(days, default=None)


def describe(tags: Mapping[str, str]) -> str:
    return f"{tags.get(DATASET)} partition {tags.get(PARTITION)} from {tags.get(SOURCE)}"


def _quote(value: str) -> str:
    return value.replace("'", "''")
