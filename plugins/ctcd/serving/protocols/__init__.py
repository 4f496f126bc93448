"""Wire formats: each module turns request bodies into a :class:`ScoringRequest` and model
output into response bodies. No routing, no model calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctcd.serving.schema import Table


@dataclass
class ScoringRequest:
    """Checked input of one request. ``table`` when the model has a signature the server
    understands (batchable); otherwise ``frame`` parsed by MLflow's own parser."""

    table: Table | None = None
    frame: Any = None
    params: Mapping[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Model outputs asked for by name (V2 ``outputs``), e.g. ("predict_proba",); empty:
    # the model's default output, ``predict``.
    outputs: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        if self.table is not None:
            return self.table.rows
        return _length(self.frame)

    def model_input(self) -> Any:
        return self.table.to_model_input() if self.table is not None else self.frame


@dataclass(frozen=True)
class Reply:
    """An encoded answer that needs more than the default JSON media type."""

    body: bytes
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def take(result: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a model's output (ndarray, Series, DataFrame or list)."""
    if hasattr(result, "iloc"):
        return result.iloc[start:stop]
    return result[start:stop]


def jsonable(result: Any) -> Any:
    """Model output -> something orjson serializes (OPT_SERIALIZE_NUMPY), as MLflow's
    scoring server would present it (DataFrames as records; a float32's exact value, e.g.
    0.30000001192092896, not orjson's shortest float32 text 0.3, which reads back as
    another double)."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return result.to_dict(orient="records")
    if isinstance(result, pd.Series):
        result = result.to_numpy()
    if isinstance(result, np.ndarray):
        if result.dtype == np.float32:  # each value in full, as MLflow's server writes it
            return result.astype(np.float64)
        if result.dtype.kind in "biuf" and result.flags.c_contiguous:
            return result
        return result.tolist()
    if isinstance(result, (np.generic,)):
        return result.item()
    return result


def _length(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1
