from __future__ import annotations

from datetime import date

import pytest

from ctcd.data.churn import CORRUPTIONS, churn_spec, generate_snapshot

SPEC = churn_spec()
FEATURES, LABEL, CATEGORIES = SPEC.feature_names, SPEC.label.name, SPEC.categories


def test_snapshot_is_deterministic_and_realistic() -> None:
    first = generate_snapshot(date(2026, 3, 1), rows=5_000)
    again = generate_snapshot(date(2026, 3, 1), rows=5_000)
    other_day = generate_snapshot(date(2026, 3, 2), rows=5_000)
    assert first.equals(again)
    assert not first[list(FEATURES)].equals(other_day[list(FEATURES)])
    assert len(first) == 5_000 and first["customer_id"].is_unique
    assert set(FEATURES) | {LABEL} <= set(first.columns)
    assert 0.15 < first[LABEL].mean() < 0.6
    for column, values in CATEGORIES.items():
        assert set(first[column]) <= set(values)


def test_drift_shifts_distributions_and_churn() -> None:
    calm = generate_snapshot(date(2026, 3, 1), rows=10_000)
    drifted = generate_snapshot(date(2026, 3, 1), rows=10_000, drift=1.0)
    assert drifted["support_calls"].mean() > calm["support_calls"].mean() + 1
    assert (drifted["contract"] == "month-to-month").mean() > (
        calm["contract"] == "month-to-month"
    ).mean()
    assert drifted[LABEL].mean() > calm[LABEL].mean()


@pytest.mark.parametrize("corruption", [c for c in CORRUPTIONS if c != "none"])
def test_every_corruption_changes_the_data(corruption: str) -> None:
    clean = generate_snapshot(date(2026, 3, 1), rows=2_000)
    bad = generate_snapshot(date(2026, 3, 1), rows=2_000, corruption=corruption)
    assert not clean.equals(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rows": 0}, "rows"), ({"drift": 2.0}, "drift"), ({"corruption": "gremlins"}, "corruption")],
)
def test_bad_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_snapshot(date(2026, 3, 1), **{"rows": 100, **kwargs})


def test_columns_are_those_of_the_spec() -> None:
    frame = generate_snapshot(date(2026, 3, 1), rows=100)
    assert list(frame.columns) == list(SPEC.columns)
