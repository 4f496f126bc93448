"""A data set's Great Expectations suite, derived from its spec.

``derive_suite(spec)`` turns the spec into a GX 1.x expectation suite (as the JSON GX
reads: ``{"name", "expectations": [{"type", "kwargs", "meta"}], ...}``): every column
present, its type, its share of nulls, its range or its categories, the row-count bounds,
unique non-null ids, every label class present and none below ``min_class_share``, and the
freshness of the partition. ``ctcd data suite <dataset>`` writes it to
``include/expectations/<dataset>.json``, the file runs read, reviewed like code; a test
keeps the checked-in file equal to what the spec derives.

Freshness depends on the day of the run, so its bounds are suite parameters
(``$PARAMETER``) filled in by :func:`suite_parameters` at each run.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from ctcd.data.spec import DatasetSpec, FeatureSpec
from ctcd.errors import InvalidParams

# Types as the pandas engine of GX sees a column read from Parquet or CSV. Text columns
# are handed over as ``object`` (see ctcd.validation.checkpoint), whose values are ``str``.
INTEGER_TYPES: Final = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_TYPES: Final = ["float32", "float64"]
TEXT_TYPES: Final = ["str"]
OLDEST: Final = "oldest_partition_date"
NEWEST: Final = "newest_partition_date"


def expectations_dir() -> Path:
    from ctcd.settings import get_settings

    return get_settings().datasets_dir.parent / "expectations"


def suite_path(dataset: str) -> Path:
    return expectations_dir() / f"{dataset}.json"


def _expect(kind: str, why: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": {"why": why}}


def _types(feature: FeatureSpec) -> list[str]:
    if feature.type == "category":
        return TEXT_TYPES
    if feature.type == "integer":
        # pandas holds an integer column with nulls as floats; nulls are checked apart.
        return INTEGER_TYPES + (FLOAT_TYPES if feature.max_null_fraction > 0 else [])
    return INTEGER_TYPES + FLOAT_TYPES


def _nulls(column: str, max_null_fraction: float) -> dict[str, Any]:
    if max_null_fraction == 0:
        return _expect("column_values_to_not_be_null", "no nulls allowed", column=column)
    return _expect(
        "column_values_to_not_be_null",
        f"at most {max_null_fraction:.0%} nulls",
        column=column,
        mostly=round(1.0 - max_null_fraction, 6),
    )


def derive_suite(spec: DatasetSpec) -> dict[str, Any]:
    """The expectation suite (GX 1.x JSON) the spec of a data set implies."""
    exps: list[dict[str, Any]] = [
        _expect("column_to_exist", "a column of the spec", column=c) for c in spec.columns
    ]
    exps.append(
        _expect(
            "table_row_count_to_be_between",
            "row-count bounds of the spec",
            min_value=spec.rows.min,
            max_value=spec.rows.max,
        )
    )
    ident = spec.id_column
    exps.append(_expect("column_values_to_not_be_null", "every row has an id", column=ident))
    exps.append(_expect("column_values_to_be_unique", "ids are unique", column=ident))
    if spec.partition_column:
        column = spec.partition_column
        exps.append(_expect("column_values_to_not_be_null", "rows are dated", column=column))
        exps.append(
            _expect(
                "column_min_to_be_between",
                "the partition is fresh (freshness.max_age_days)",
                column=column,
                min_value={"$PARAMETER": OLDEST},
            )
        )
        exps.append(
            _expect(
                "column_max_to_be_between",
                "the partition is not dated in the future",
                column=column,
                max_value={"$PARAMETER": NEWEST},
            )
        )
    for feature in spec.features:
        name = feature.name
        exps.append(
            _expect(
                "column_values_to_be_in_type_list",
                f"{feature.type} column",
                column=name,
                type_list=_types(feature),
            )
        )
        exps.append(_nulls(name, feature.max_null_fraction))
        if feature.categories is not None:
            exps.append(
                _expect(
                    "column_values_to_be_in_set",
                    "allowed categories",
                    column=name,
                    value_set=list(feature.categories),
                )
            )
        elif feature.min is not None or feature.max is not None:
            exps.append(
                _expect(
                    "column_values_to_be_between",
                    "allowed range",
                    column=name,
                    min_value=feature.min,
                    max_value=feature.max,
                )
            )
    exps.extend(_label_expectations(spec))
    return {
        "name": spec.name,
        "expectations": exps,
        "meta": {"derived_from": f"include/datasets/{spec.name}.yaml"},
        "notes": f"Derived from the {spec.name} data set spec by `ctcd data suite {spec.name}`; "
        "change the spec and regenerate rather than editing this file.",
    }


def _label_expectations(spec: DatasetSpec) -> list[dict[str, Any]]:
    label = spec.label
    present = _expect("column_values_to_not_be_null", "every row is labelled", column=label.name)
    if label.classes is None:  # a regression target: a number, in its range
        exps = [
            _expect("column_values_to_be_in_type_list",
                    "label type: a regression target is a number",
                    column=label.name, type_list=INTEGER_TYPES + FLOAT_TYPES),
            present,
        ]
        if label.min is not None or label.max is not None:
            exps.append(_expect("column_values_to_be_between", "label range", column=label.name,
                                min_value=label.min, max_value=label.max))
        return exps
    classes = list(label.classes)
    numeric = all(isinstance(c, int) for c in classes)
    exps = [
        _expect(
            "column_values_to_be_in_type_list",
            "label type: the classes' type" + (" (whole numbers)" if numeric else " (text)"),
            column=label.name,
            type_list=INTEGER_TYPES if numeric else TEXT_TYPES,
        ),
        present,
        _expect(
            "column_values_to_be_in_set", "label classes", column=label.name, value_set=classes
        ),
        _expect(
            "column_distinct_values_to_contain_set",
            "every class is present",
            column=label.name,
            value_set=classes,
        ),
    ]
    if label.min_class_share > 0:
        # "At least this share of the rows is class c", once per class: a value set of one
        # class, holding for `mostly` of the rows.
        exps.extend(
            _expect(
                "column_values_to_be_in_set",
                f"label balance: class {c!r} makes up at least {label.min_class_share:.0%}",
                column=label.name,
                value_set=[c],
                mostly=label.min_class_share,
            )
            for c in classes
        )
    return exps


def suite_parameters(spec: DatasetSpec, today: date) -> dict[str, Any]:
    """Values of the suite's ``$PARAMETER``s for a run on ``today``."""
    max_age = spec.freshness.max_age_days
    oldest = today - timedelta(days=max_age) if max_age is not None else date(1, 1, 1)
    return {OLDEST: oldest.isoformat(), NEWEST: today.isoformat()}


def render(suite: dict[str, Any]) -> str:
    return json.dumps(suite, indent=2, sort_keys=False) + "\n"


def write_suite(spec: DatasetSpec, path: Path | None = None) -> Path:
    path = path or suite_path(spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(derive_suite(spec)))
    return path


def load_suite(dataset: str) -> dict[str, Any]:
    """The checked-in suite of ``dataset``."""
    path = suite_path(dataset)
    if not path.is_file():
        raise InvalidParams(
            f"No expectation suite for data set {dataset!r} at {path}. Generate it from the "
            f"spec with `ctcd data suite {dataset}` and commit it."
        )
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidParams(f"Expectation suite {path} is not valid JSON: {err}") from err
    return loaded
