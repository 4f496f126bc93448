"""The demo producer: lands one day's partition of an example data set (churn, wine or
diabetes) in a landing location.

What a user's own system does in production: write ``date=YYYY-MM-DD/part-0.parquet`` (or
``.csv``) under the landing URI, then tell Airflow (the ``data_producer`` DAG updates the
data set's Asset). Files are written under a hidden name and renamed when complete, so a
reader never sees half a file. With ``labels=False`` the partition carries no label (as
served traffic would not) and the labels land apart, under ``<dataset>_labels/``, as
delayed labels do. With ``purpose="scoring"`` it lands rows to score instead: no labels at
all, under the scoring location ``batch_inference`` reads (``$CTCD_HOME/scoring/<dataset>/``
by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from ctcd.data.churn import generate_snapshot
from ctcd.data.sources import default_landing_uri, default_scoring_uri
from ctcd.data.spec import DatasetSpec

Format = Literal["parquet", "csv"]
Purpose = Literal["training", "scoring"]


@dataclass(frozen=True)
class Produced:
    partition: str
    rows: int
    labels: str | None


def _write(frame: Any, folder: Any, name: str, fmt: Format) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    partial = folder / f".{name}.partial"
    with partial.open("wb") as handle:
        if fmt == "csv":
            handle.write(frame.to_csv(index=False).encode())
        else:
            frame.to_parquet(handle, index=False)
    partial.rename(final)
    return str(final)


def produce(
    day: date,
    rows: int,
    *,
    spec: DatasetSpec,
    drift: float = 0.0,
    corruption: str = "none",
    labels: bool = True,
    landing_uri: str | None = None,
    fmt: Format = "parquet",
    conn_id: str | None = None,
    purpose: Purpose = "training",
) -> Produced:
    """Generate and land partition ``day``; return where it went. ``purpose="scoring"``:
    rows to score, without labels, under the scoring location."""
    from airflow.sdk import ObjectStoragePath

    if spec.name == "churn":
        frame = generate_snapshot(day, rows, drift=drift, corruption=corruption, spec=spec)
    else:
        from ctcd.data.examples import generate

        frame = generate(spec, day, rows, drift=drift, corruption=corruption)
    scoring = purpose == "scoring"
    uri = landing_uri or (default_scoring_uri if scoring else default_landing_uri)(spec.name)
    root = ObjectStoragePath(uri, conn_id=conn_id)
    label = spec.label.name
    name = f"part-0.{fmt}"
    label_path = None
    if scoring:
        frame = frame.drop(columns=[label], errors="ignore")
    elif not labels and label in frame.columns:
        labels_root = root.parent / f"{spec.name}_labels" / f"date={day.isoformat()}"
        label_path = _write(frame[[spec.id_column, label]], labels_root, name, fmt)
        frame = frame.drop(columns=[label])
    path = _write(frame, root / f"date={day.isoformat()}", name, fmt)
    return Produced(partition=path, rows=len(frame), labels=label_path)
