from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctcd.data.spec import DatasetSpec, load_spec
from ctcd.errors import InvalidParams


def test_churn_spec_loads_and_derives_feature_groups() -> None:
    spec = load_spec("churn")
    assert spec.id_column == "customer_id"
    assert spec.label.name == "churned"
    assert spec.numeric_features[0] == "tenure_months"
    assert "contract" in spec.categorical_features
    assert spec.categories["region"] == ("north", "south", "east", "west")
    assert spec.columns[0] == "customer_id"
    assert spec.columns[-1] == "churned"
    assert set(spec.feature_names) == set(spec.numeric_features) | set(spec.categorical_features)


def test_unknown_spec_names_the_known_ones() -> None:
    with pytest.raises(InvalidParams, match=r"No data set spec 'nope'.*churn"):
        load_spec("nope")


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _minimal() -> dict:
    return {
        "name": "x",
        "id_column": "id",
        "label": {"name": "y", "classes": [0, 1]},
        "features": [{"name": "a", "type": "float", "min": 0, "max": 1}],
    }


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    doc = _minimal()
    doc["features"][0]["type"] = "decimal"
    with pytest.raises(InvalidParams, match=r"features\.0\.type"):
        load_spec(_write(tmp_path, doc))


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "c", "type": "category"}, "needs `categories`"),
        ({"name": "c", "type": "float", "categories": ["a"]}, "takes no categories"),
        ({"name": "c", "type": "integer", "min": 5, "max": 1}, "min 5.0 > max 1.0"),
        ({"name": "id", "type": "integer"}, "used twice"),
    ],
)
def test_inconsistent_features_are_refused(tmp_path: Path, feature: dict, message: str) -> None:
    doc = _minimal()
    doc["features"].append(feature)
    with pytest.raises(InvalidParams, match=message):
        load_spec(_write(tmp_path, doc))


def test_spec_is_frozen() -> None:
    spec = DatasetSpec.model_validate(_minimal())
    with pytest.raises(ValueError):
        spec.name = "other"  # type: ignore[misc]
