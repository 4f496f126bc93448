"""The checked-in expectation suites are what the specs derive, and say what they should."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from ctcd.data.spec import datasets_dir, load_spec
from ctcd.validation.suite import derive_suite, render, suite_parameters, suite_path

SPECS = sorted(p.stem for p in datasets_dir().glob("*.yaml"))


@pytest.mark.parametrize("dataset", SPECS)
def test_checked_in_suite_equals_what_the_spec_derives(dataset: str) -> None:
    path = suite_path(dataset)
    assert path.is_file(), f"run `ctcd data suite {dataset}` and commit {path}"
    assert path.read_text() == render(derive_suite(load_spec(dataset))), (
        f"{path} is out of date with include/datasets/{dataset}.yaml: "
        f"run `ctcd data suite {dataset}` and commit it"
    )


def test_suite_covers_every_rule_of_the_spec() -> None:
    spec = load_spec("churn")
    kinds: dict[tuple[str, str | None], dict] = {
        (e["type"], e["kwargs"].get("column")): e["kwargs"]
        for e in derive_suite(spec)["expectations"]
    }
    for column in spec.columns:
        assert ("expect_column_to_exist", column) in kinds
    age = spec.feature("age")
    assert kinds[("expect_column_values_to_be_between", "age")] == {
        "column": "age",
        "min_value": age.min,
        "max_value": age.max,
    }
    assert kinds[("expect_column_values_to_be_in_set", "contract")]["value_set"] == list(
        spec.categories["contract"]
    )
    assert ("expect_column_values_to_be_unique", "customer_id") in kinds
    assert kinds[("expect_table_row_count_to_be_between", None)] == {
        "min_value": spec.rows.min,
        "max_value": spec.rows.max,
    }
    balance = [e["kwargs"] for e in derive_suite(spec)["expectations"]
               if e["meta"]["why"].startswith("label balance")]
    assert balance == [{"column": "churned", "value_set": [c], "mostly": 0.02} for c in (0, 1)]
    assert ("expect_column_min_to_be_between", "snapshot_date") in kinds


def test_a_regression_label_is_a_number_in_its_range() -> None:
    spec = load_spec("diabetes")
    label = [e for e in derive_suite(spec)["expectations"]
             if e["kwargs"].get("column") == "progression"]
    kinds = {e["type"]: e["kwargs"] for e in label}
    assert set(kinds) == {"expect_column_to_exist", "expect_column_values_to_be_in_type_list",
                          "expect_column_values_to_not_be_null",
                          "expect_column_values_to_be_between"}
    assert "float64" in kinds["expect_column_values_to_be_in_type_list"]["type_list"]
    assert kinds["expect_column_values_to_be_between"] == {
        "column": "progression", "min_value": 0.0, "max_value": 500.0}


def test_every_class_of_a_multiclass_label_is_checked() -> None:
    suite = derive_suite(load_spec("wine"))["expectations"]
    balance = [e["kwargs"]["value_set"] for e in suite
               if e["meta"]["why"].startswith("label balance")]
    assert balance == [[0], [1], [2]]


def test_a_feature_allowing_nulls_gets_mostly(tmp_path: Path) -> None:
    raw = load_spec("churn").model_dump(mode="json")
    raw["features"][0]["max_null_fraction"] = 0.05
    path = tmp_path / "churn.json"
    path.write_text(json.dumps(raw))
    suite = derive_suite(load_spec(path))
    [nulls] = [
        e["kwargs"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_not_be_null"
        and e["kwargs"]["column"] == "tenure_months"
    ]
    assert nulls["mostly"] == 0.95


def test_freshness_parameters_follow_the_run_day() -> None:
    params = suite_parameters(load_spec("churn"), date(2026, 11, 21))
    assert params == {"oldest_partition_date": "2026-10-22", "newest_partition_date": "2026-11-21"}
