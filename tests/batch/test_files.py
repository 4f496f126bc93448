"""Reading scoring files: the signature's text features arrive as Python strings, one per
distinct value, equal to what pandas gives, nulls included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctcd.batch.files import read_chunks, text_features, to_frame
from ctcd.serving.schema import ColumnSpec, InputSchema

SCHEMA = InputSchema(columns=(ColumnSpec("plan", "string"), ColumnSpec("age", "long")))


def _batch() -> pa.RecordBatch:
    return pa.record_batch({
        "plan": pa.array(["basic", None, "premium", "basic"], pa.large_string()),
        "age": pa.array([30, 41, None, 25], pa.int64()),
        "customer_id": pa.array(["a", "b", "c", "d"], pa.string()),
    })


def test_text_features_are_object_arrays_equal_to_pandas_own() -> None:
    batch = _batch()
    plain = batch.to_pandas()
    frame = to_frame(batch, text_features(SCHEMA))
    assert text_features(SCHEMA) == ("plan",)
    assert frame["plan"].dtype == object
    got, want = frame["plan"].to_numpy(), plain["plan"].to_numpy()
    assert got[[0, 2, 3]].tolist() == want[[0, 2, 3]].tolist() == ["basic", "premium", "basic"]
    assert np.isnan(got[1]) and np.isnan(want[1])  # a null is NaN, as pandas gives it
    assert got[0] is got[3]  # one Python string per distinct value
    # the other columns are as pandas makes them (ids stay Arrow-backed text for writing)
    pd.testing.assert_frame_equal(frame.drop(columns="plan"), plain.drop(columns="plan"))


def test_a_named_column_the_file_lacks_or_that_is_not_text_is_left_alone() -> None:
    batch = _batch()
    frame = to_frame(batch, ("age", "missing"))
    pd.testing.assert_frame_equal(frame, batch.to_pandas())


def test_parquet_chunks_carry_the_converted_text(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_batches([_batch()]), path)
    chunks = list(read_chunks(path, 3, SCHEMA))
    assert [len(c.frame) for c in chunks] == [3, 1]
    assert all(c.frame["plan"].dtype == object for c in chunks)
    assert chunks[1].frame["plan"].tolist() == ["basic"]
