"""V2 request inputs for tests: one tensor per column of a frame."""

from __future__ import annotations

from typing import Any


def v2_columns(frame: Any) -> list[dict[str, Any]]:
    """One V2 input per column (INT64, FP64 or BYTES by the column's dtype)."""
    out = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = {"i": "INT64", "f": "FP64"}.get(values.dtype.kind, "BYTES")
        out.append({"name": name, "shape": [len(values)], "datatype": datatype,
                    "data": values.tolist()})
    return out
