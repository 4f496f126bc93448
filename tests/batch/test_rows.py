"""Row-level checks: good rows kept in order, each bad one rejected with its field named."""

from __future__ import annotations

import numpy as np

from ctcd.batch.rows import check_rows
from ctcd.data.spec import load_spec
from ctcd.serving.schema import ColumnSpec, InputSchema

SCHEMA = InputSchema(columns=(ColumnSpec("age", "long"), ColumnSpec("charges", "double"),
                              ColumnSpec("region", "string")))


def test_a_clean_chunk_is_kept_whole_with_the_signature_dtypes() -> None:
    checked = check_rows(SCHEMA, {"age": np.array([30, 40]), "charges": np.array([1.5, 2.0]),
                                  "region": np.array(["north", "west"], dtype=object)}, 2)
    assert checked.rejects == {}
    assert checked.kept.tolist() == [0, 1]
    assert checked.table is not None
    assert checked.table.arrays["age"].dtype == np.int64
    assert checked.table.arrays["region"].tolist() == ["north", "west"]


def test_every_bad_value_is_found_and_named_and_the_rest_kept() -> None:
    n = 1000
    age: list[object] = list(range(n))
    age[7], age[500] = "old", 3.5
    region: list[object] = ["north"] * n
    region[999] = None
    checked = check_rows(SCHEMA, {"age": age, "charges": [1.0] * n, "region": region}, n,
                         where="data.")
    assert checked.rejects == {
        7: "data.age: expected an integer (long), got str 'old'",
        500: "data.age: expected an integer, got 3.5",
        999: "data.region: is null but required",
    }
    assert checked.table is not None and checked.table.rows == n - 3
    assert checked.kept.tolist() == [i for i in range(n) if i not in (7, 500, 999)]
    assert checked.table.arrays["age"][:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 8]


def test_csv_text_numbers_are_parsed_and_words_rejected() -> None:
    age = np.array(["30", "old", "", "41"], dtype=object)
    checked = check_rows(SCHEMA, {"age": age, "charges": np.array([1.0] * 4),
                                  "region": np.array(["a"] * 4, dtype=object)}, 4, text=True)
    assert checked.rejects[1] == "age: expected an integer (long), got 'old'"
    assert checked.rejects[2].startswith("age: is NaN/null")
    assert checked.table is not None
    assert checked.table.arrays["age"].tolist() == [30, 41]


def test_a_data_set_spec_adds_ranges_and_categories() -> None:
    spec = load_spec("churn")
    schema = InputSchema(columns=(ColumnSpec("age", "long"), ColumnSpec("region", "string")))
    checked = check_rows(schema, {"age": [30, 200, 40], "region": ["north", "south", "mars"]},
                         3, spec=spec)
    assert checked.rejects == {
        1: "age: 200 is above the maximum 110 of data set 'churn'",
        2: "region: 'mars' is not one of the categories ['north', 'south', 'east', 'west'] "
           "of data set 'churn'",
    }
    assert checked.kept.tolist() == [0]


def test_nothing_good_gives_no_table() -> None:
    checked = check_rows(SCHEMA, {"age": ["x"], "charges": [1.0], "region": ["a"]}, 1)
    assert checked.table is None and list(checked.rejects) == [0]


def test_text_numbers_take_null_words_blanks_and_spaces() -> None:
    schema = InputSchema(columns=(ColumnSpec("charges", "double", required=False),))
    charges = np.array([" 1.5 ", "NA", None, "", "n/a", "1e3", "12abc", "-"], dtype=object)
    checked = check_rows(schema, {"charges": charges}, 8, text=True)
    assert checked.rejects == {6: "charges: expected a number (double), got '12abc'",
                               7: "charges: expected a number (double), got '-'"}
    assert checked.table is not None
    values = checked.table.arrays["charges"].tolist()
    assert values[0] == 1.5 and values[5] == 1000.0
    assert all(v != v for v in values[1:5])  # nulls, not rejects
