from __future__ import annotations

import typing

import pytest

from ctcd.errors import InvalidParams
from ctcd.training.model import ESTIMATORS
from ctcd.training.params import (
    DEFAULT_HYPERPARAMETERS,
    ContinuousTrainingParams,
    ModelType,
    airflow_params,
    parse_params,
)


def test_model_types_match_the_estimators() -> None:
    assert set(typing.get_args(ModelType)) == set(ESTIMATORS) == set(DEFAULT_HYPERPARAMETERS)


def test_defaults_are_valid_and_fill_hyperparameters() -> None:
    params = parse_params({})
    assert params.effective_hyperparameters == DEFAULT_HYPERPARAMETERS[params.model_type]
    assert parse_params({"snapshot_date": "2026-02-03"}).snapshot_date.isoformat() == "2026-02-03"


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"learning_rate": 0.1}, "unknown parameter 'learning_rate'"),
        ({"min_roc_auc": 1.5}, "min_roc_auc"),
        ({"source": "s3"}, "source"),
        ({"dataset": "../etc"}, "dataset"),
        ({"force": "maybe"}, "force"),
        ({"strategy": "yolo"}, "strategy"),
        ({"snapshot_date": "yesterday"}, "snapshot_date"),
        ({"hyperparameters": {"max_iter": -1}}, "max_iter"),
        (
            {"model_type": "logistic_regression", "hyperparameters": {"max_iter": 5, "bogus": 1}},
            "bogus",
        ),
    ],
)
def test_bad_conf_names_the_parameter(conf: dict, named: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params(conf)
    assert named in caught.value.message
    assert "Valid parameters" in caught.value.message


def test_airflow_params_mirror_the_model_with_types_and_bounds() -> None:
    params = airflow_params()
    assert set(params) == set(ContinuousTrainingParams.model_fields)
    assert params["min_roc_auc"].schema["maximum"] == 1.0
    assert params["min_roc_auc"].value == 0.75
    assert params["strategy"].schema["enum"] == ["replace", "blue_green", "canary"]
    assert params["snapshot_date"].schema["type"] == ["string", "null"]
    for name, param in params.items():
        param.resolve()  # every default satisfies its own schema
        assert param.description, f"{name} has no description for the trigger form"
