"""The landing location a pipeline test drops its files in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ctcd.data.churn import generate_snapshot

TODAY = datetime.now(UTC).date()


@dataclass
class Landing:
    root: Path

    @property
    def uri(self) -> str:
        return f"file://{self.root}/"

    def folder(self, day: date = TODAY) -> Path:
        path = self.root / f"date={day.isoformat()}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def frame(self, day: date = TODAY, rows: int = 2_000, **kwargs: Any) -> pd.DataFrame:
        return generate_snapshot(day, rows, **kwargs)

    def parquet(self, frame: pd.DataFrame, day: date = TODAY, name: str = "part-0") -> Path:
        path = self.folder(day) / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        return path

    def csv(self, frame: pd.DataFrame, day: date = TODAY, name: str = "part-0", **kw: Any) -> Path:
        path = self.folder(day) / f"{name}.csv"
        frame.to_csv(path, index=False, **kw)
        return path



Run = Callable[..., tuple[dict[str, Any], dict[str, Any]]]
Stopped = Callable[..., str]
