"""The Assets batch scoring is scheduled on. Cheap to import (DAG files use it).

``serving_asset`` is the Asset continuous_training's ``promote`` updates when a new champion
goes live (its event's extra carries ``model_name`` and ``version``); ``scoring_asset`` is the
one a producer of rows to score updates when it lands a partition.
"""

from __future__ import annotations

from airflow.sdk import Asset


def serving_asset(model: str) -> Asset:
    return Asset(name=f"{model}-serving", uri=f"ctcd://models/{model}")


def scoring_asset(dataset: str) -> Asset:
    return Asset(name=f"dataset-{dataset}-scoring", uri=f"ctcd://datasets/{dataset}/scoring")
