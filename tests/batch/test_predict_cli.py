"""``ctcd predict`` on real files with a real registered model: chunks, rejects, versions."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from tests.data.messy_csv import write_messy_csv
from tests.oracle import pyfunc_predictions
from typer.testing import CliRunner

from ctcd.cli import build
from ctcd.data.churn import FEATURES, generate_snapshot

pytestmark = pytest.mark.e2e


def _frame(rows: int = 2500) -> pd.DataFrame:
    return generate_snapshot(date(2026, 1, 3), rows=rows).drop(columns=["churned"])


def _expected(model_uri: str, frame: pd.DataFrame) -> list[int]:
    return pyfunc_predictions(model_uri, frame[list(FEATURES)])


def test_a_parquet_file_is_scored_in_chunks_beside_the_input(
    tmp_path: Path, churn_model: Any,
) -> None:
    frame = _frame()
    source = tmp_path / "customers.parquet"
    frame.to_parquet(source, row_group_size=700)
    result = CliRunner().invoke(build(), ["predict", "--model",
                                          f"{churn_model.name}/{churn_model.version}",
                                          str(source), "--chunk-rows", "1000"])
    assert result.exit_code == 0, result.output
    assert f"scored 2,500 of 2,500 rows with {churn_model.name} version" in result.output

    out = pd.read_parquet(tmp_path / "customers.parquet.predictions.parquet")
    assert out["input_row"].tolist() == list(range(2500))
    assert out["customer_id"].tolist() == frame["customer_id"].tolist()  # ids pass through
    assert set(out["model_name"]) == {churn_model.name}
    assert set(out["model_version"]) == {churn_model.version}
    assert out["prediction"].tolist() == _expected(churn_model.uri, frame)
    assert not (tmp_path / "customers.rejects.parquet").exists()


def test_bad_csv_rows_go_to_rejects_with_the_field_and_the_rest_is_scored(
    tmp_path: Path, model_factory: Any,
) -> None:
    model = model_factory(name="churn-offline")
    mlflow.MlflowClient().set_registered_model_alias("churn-offline", "champion", model.version)
    frame = _frame(1200)
    text = frame.astype(object)
    text.loc[5, "age"] = "old"
    text.loc[600, "contract"] = ""
    text.loc[900, "region"] = "mars"
    source = tmp_path / "in.csv"
    text.to_csv(source, index=False)
    output = tmp_path / "out" / "scored.csv"
    result = CliRunner().invoke(build(), ["predict", str(source), "-m", "churn-offline",
                                          "-o", str(output), "--chunk-rows", "500",
                                          "--dataset", "churn"])
    assert result.exit_code == 0, result.output
    assert "rejected 3 rows" in result.output

    out = pd.read_csv(output)
    good = [i for i in range(1200) if i not in (5, 600, 900)]
    assert out["input_row"].tolist() == good
    assert set(out["model_version"].astype(str)) == {model.version}  # champion resolved
    assert out["prediction"].tolist() == _expected(model.uri, frame.iloc[good])
    rejects = pd.read_csv(tmp_path / "out" / "scored.rejects.csv")
    assert rejects["input_row"].tolist() == [5, 600, 900]
    assert rejects["reason"].tolist() == [
        "age: expected an integer (long), got 'old'",
        "contract: is null but required",
        "region: 'mars' is not one of the categories ['north', 'south', 'east', 'west'] "
        "of data set 'churn'",
    ]
    assert '"age":"old"' in rejects["data"][0]

    strict = CliRunner().invoke(build(), ["predict", str(source), "-m", "churn-offline",
                                          "-o", str(output), "--max-reject-share", "0.001"])
    assert strict.exit_code == 3, strict.output


def test_a_missing_model_or_column_is_a_clear_error(tmp_path: Path, churn_model: Any) -> None:
    source = tmp_path / "in.parquet"
    _frame(1000).drop(columns=["age"]).to_parquet(source)
    missing_column = CliRunner().invoke(build(), ["predict", str(source), "-m",
                                                  f"{churn_model.name}/{churn_model.version}"])
    assert missing_column.exit_code == 1
    assert "has no column(s) ['age']" in missing_column.output
    assert not (tmp_path / "in.parquet.predictions.parquet").exists()  # nothing half-written

    no_model = CliRunner().invoke(build(), ["predict", str(source), "-m", "no-such-model@x"])
    assert no_model.exit_code == 1 and "could not load models:/no-such-model@x" in \
        no_model.output


def test_csv_lines_that_do_not_parse_are_rejected_with_their_line_numbers(
    tmp_path: Path, churn_model: Any,
) -> None:
    """A real damaged file: byte-order mark, a field too many, one too few, an empty line,
    text in a numeric column, an unterminated quote. The rest is scored."""
    frame = _frame(1200)
    messy = write_messy_csv(frame, tmp_path / "in.csv")
    result = CliRunner().invoke(build(), ["predict", str(messy.path), "--model",
                                          f"{churn_model.name}/{churn_model.version}",
                                          "--chunk-rows", "500"])
    assert result.exit_code == 0, result.output
    assert "scored 1,196 of 1,200 rows" in result.output
    assert "rejected 4 rows" in result.output and "unparsable (3)" in result.output

    out = pd.read_parquet(tmp_path / "in.csv.predictions.parquet")
    good = frame.iloc[messy.good]
    assert out["customer_id"].tolist() == good["customer_id"].tolist()
    assert out["prediction"].tolist() == _expected(churn_model.uri, good)
    rejects = pd.read_parquet(tmp_path / "in.csv.rejects.parquet")
    assert rejects["reason"].tolist() == [
        "age: expected an integer (long), got 'old'",
        "unparsable: line 5 of in.csv: 14 fields where the header has 13",
        "unparsable: line 15 of in.csv: 12 fields where the header has 13",
        "unparsable: line 1202 of in.csv: 1 field where the header has 13 "
        "(an unterminated quote)",
    ]
    # input_row counts the rows that parsed (one line before it did not); a line has none
    assert rejects["input_row"].tolist()[0] == messy.text_age - 1
    assert rejects["input_row"].isna().tolist() == [False, True, True, True]
    assert rejects["data"].tolist()[1:] == list(messy.bad_lines.values())
