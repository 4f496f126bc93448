"""The Asset of a data set: producers update it when a partition lands, and
``continuous_training`` is scheduled on it. Cheap to import (DAG files use it)."""

from __future__ import annotations

from airflow.sdk import Asset


def dataset_asset(dataset: str) -> Asset:
    return Asset(name=f"dataset-{dataset}", uri=f"ctcd://datasets/{dataset}")
