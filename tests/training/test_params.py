"""A training run's parameters: the model file's values as defaults, the run's conf on top,
every bad value named."""

from __future__ import annotations

import pytest
from tests.conftest import ModelFiles

from ctcd.errors import InvalidParams
from ctcd.params import airflow_params
from ctcd.training.model import DEFAULT_HYPERPARAMETERS
from ctcd.training.params import ContinuousTrainingParams, parse_params
from ctcd.training.trainers import check


def test_the_model_files_values_are_the_defaults(model_files: ModelFiles) -> None:
    model = model_files.example("churn")
    params = parse_params({}, model)
    assert params.threshold == 0.75 and params.strategy == "blue_green"
    assert params.effective_estimator(model) == "hist_gradient_boosting"
    assert params.effective_hyperparameters(model) == model.trainer.hyperparameters
    run = parse_params({"estimator": "random_forest", "snapshot_date": "2026-02-03"}, model)
    assert run.snapshot_date is not None and run.snapshot_date.isoformat() == "2026-02-03"
    assert run.effective_estimator(model) == "random_forest"
    # another estimator than the file's gets its own defaults, not the file's hyperparameters
    assert run.effective_hyperparameters(model) == DEFAULT_HYPERPARAMETERS["random_forest"]
    assert "hyperparameters" not in model.training_params()  # the form's default: the file's


def test_a_shortcut_without_hyperparameters_gets_its_defaults(model_files: ModelFiles) -> None:
    model = model_files.write("short", trainer={"estimator": "random_forest"})
    assert parse_params({}, model).effective_hyperparameters(model) == (
        DEFAULT_HYPERPARAMETERS["random_forest"])


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"learning_rate": 0.1}, "unknown parameter 'learning_rate'"),
        ({"holdout_fraction": 0.9}, "holdout_fraction"),
        ({"source": "s3"}, "source"),
        ({"force": "maybe"}, "force"),
        ({"strategy": "yolo"}, "strategy"),
        ({"snapshot_date": "yesterday"}, "snapshot_date"),
        ({"window_partitions": 2, "window_days": 3}, "window_partitions or window_days"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_conf_names_the_parameter(model_files: ModelFiles, conf: dict, named: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params(conf, model_files.example("churn"))
    assert named in caught.value.message


def test_one_window_bound_given_replaces_the_model_files(model_files: ModelFiles) -> None:
    model = model_files.example("churn")
    assert parse_params({"window_days": 7}, model).window_partitions is None
    assert parse_params({"window_partitions": 3}, model).window_days is None


def test_hyperparameters_are_checked_against_the_estimator(model_files: ModelFiles) -> None:
    model = model_files.example("churn")
    for bad, named in (({"max_iter": -1}, "max_iter"), ({"bogus": 1}, "bogus")):
        params = parse_params({"hyperparameters": bad}, model)
        with pytest.raises(InvalidParams, match=named):
            check(model, params.effective_estimator(model),
                  params.effective_hyperparameters(model), params.seed)


def test_a_function_trainer_takes_no_estimator(model_files: ModelFiles) -> None:
    model = model_files.example("diabetes")
    with pytest.raises(InvalidParams, match=r"trained by example_models\.diabetes:train"):
        parse_params({"estimator": "ridge"}, model)


def test_airflow_params_show_the_model_files_defaults(model_files: ModelFiles) -> None:
    model = model_files.example("churn")
    params = airflow_params(ContinuousTrainingParams, model.training_params())
    assert set(params) == set(ContinuousTrainingParams.model_fields)
    assert params["threshold"].value == 0.75
    assert params["holdout_fraction"].schema["maximum"] == 0.5
    assert params["strategy"].schema["enum"] == ["replace", "blue_green", "canary", "shadow"]
    assert params["snapshot_date"].schema["type"] == ["string", "null"]
    for name, param in params.items():
        param.resolve()  # every default satisfies its own schema
        assert param.description, f"{name} has no description for the trigger form"
    with pytest.raises(InvalidParams, match="no parameter"):
        airflow_params(ContinuousTrainingParams, {"nope": 1})
