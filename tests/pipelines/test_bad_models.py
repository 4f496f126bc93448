"""A model that cannot be trained stops its run with an error naming the model file's
trainer or the label column, and registers nothing: a trainer that does not import, that
raises, or that returns something that is no model; a label of the wrong kind for the task.
(A broken model file itself is an import error of the DAG folder: tests/models and
tests/dags/test_dag_integrity.py.)"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import ModelFiles
from tests.pipelines.landing import TODAY, Landing

from ctcd.data.examples import generate
from ctcd.data.spec import load_spec
from ctcd.errors import DataValidationError, TrainingError
from ctcd.models import ModelDefinition
from ctcd.pipelines import continuous_training as pipeline
from ctcd.tracking import Tracking

LINEAGE = {"dag_id": "t_training", "run_id": "manual__test", "task_id": "train"}


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    (folder / "bad_trainers").mkdir(parents=True)
    monkeypatch.setenv("CTCD_CODE_DIR", str(folder))
    return folder


def _trainer(code_dir: Path, model_files: ModelFiles, name: str, body: str) -> ModelDefinition:
    (code_dir / "bad_trainers" / f"{name}.py").write_text(textwrap.dedent(body))
    return model_files.write(name, trainer={"function": f"bad_trainers.{name}:train"})


def _train(model: ModelDefinition, landing: Landing, tracking: Tracking) -> dict[str, Any]:
    conf = {"landing_uri": landing.uri}
    ingested = pipeline.ingest(model, conf, tracking)
    return pipeline.train(model, ingested, pipeline.validate(ingested, tracking), conf, LINEAGE,
                          tracking)


def _nothing_registered(tracking: Tracking, model: ModelDefinition) -> None:
    assert tracking.model_versions(model.model_name) == []
    trained = tracking.search_runs(f"tags.`ctcd.model` = '{model.model_name}' and "
                                   "tags.`ctcd.stage` = 'training'")
    assert trained == []  # no run counts as trained on


def test_a_trainer_that_does_not_import_stops_at_ingest(
    landing: Landing, tracking: Tracking, model_files: ModelFiles, code_dir: Path
) -> None:
    landing.parquet(landing.frame())
    model = model_files.write("missing", trainer={"function": "bad_trainers.absent:train"})
    with pytest.raises(TrainingError) as caught:
        pipeline.ingest(model, {"landing_uri": landing.uri}, tracking)
    assert "trainer.function 'bad_trainers.absent:train': cannot import" in caught.value.message
    assert str(code_dir) in caught.value.message  # where it looked
    _nothing_registered(tracking, model)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("def train(X, y, params, spec):\n    raise RuntimeError('out of ideas')\n",
         "raised RuntimeError: out of ideas"),
        ("def train(X, y, params, spec):\n    return {'weights': [1, 2]}\n",
         "cannot be logged as a model: return a fitted scikit-learn estimator"),
        ("from sklearn.linear_model import LogisticRegression\n"
         "def train(X, y, params, spec):\n    return LogisticRegression()\n",
         "unfitted LogisticRegression"),
        ("from sklearn.linear_model import LinearRegression\n"
         "def train(X, y, params, spec):\n"
         "    return LinearRegression().fit(X[['age']], y)\n",
         "could not predict its own input example"),
    ],
    ids=["raises", "not-a-model", "unfitted", "cannot-predict"],
)
def test_a_trainer_that_fails_registers_nothing(
    landing: Landing, tracking: Tracking, model_files: ModelFiles, code_dir: Path,
    body: str, says: str, request: pytest.FixtureRequest,
) -> None:
    landing.parquet(landing.frame(rows=1_500))
    model = _trainer(code_dir, model_files, request.node.callspec.id.replace("-", "_"), body)
    with pytest.raises(TrainingError, match=says):
        _train(model, landing, tracking)
    _nothing_registered(tracking, model)


def test_text_labels_for_a_regression_stop_at_validation(
    tmp_path: Path, ctcd_home: Path, tracking: Tracking, model_files: ModelFiles
) -> None:
    model = model_files.example("diabetes")
    spec = load_spec("diabetes")
    frame = generate(spec, TODAY, 1_000)
    frame["progression"] = np.where(frame["progression"] > 150, "high", "low")
    folder = tmp_path / "landing" / f"date={TODAY}"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "part-0.parquet", index=False)
    ingested = pipeline.ingest(model, {"landing_uri": f"file://{tmp_path}/landing/"}, tracking)
    with pytest.raises(DataValidationError) as caught:
        pipeline.validate(ingested, tracking)
    assert "progression: column_values_to_be_in_type_list" in caught.value.message
    _nothing_registered(tracking, model)


def test_a_continuous_label_for_a_classifier_stops_at_validation(
    landing: Landing, tracking: Tracking, model_files: ModelFiles
) -> None:
    model = model_files.write("churn")
    frame = landing.frame(day=TODAY - timedelta(days=1))
    frame["churned"] = np.random.default_rng(0).uniform(0, 1, len(frame)).round(3)
    landing.parquet(frame, day=TODAY - timedelta(days=1))
    ingested = pipeline.ingest(model, {"landing_uri": landing.uri}, tracking)
    with pytest.raises(DataValidationError) as caught:
        pipeline.validate(ingested, tracking)
    message = caught.value.message
    assert "churned: column_values_to_be_in_set" in message  # not one of the classes [0, 1]
    assert "churned: column_values_to_be_in_type_list" in message  # and not whole numbers
    _nothing_registered(tracking, model)


def test_a_pending_retraining_reason_is_carried_into_the_next_run_that_trains(
    landing: Landing, tracking: Tracking, churn: ModelDefinition
) -> None:
    from ctcd.pipelines.ingest import pending_retrain, set_pending_retrain

    landing.parquet(landing.frame(rows=1_500))
    tracking.client.create_registered_model(churn.model_name)
    set_pending_retrain(tracking, churn.model_name, "drift seen; waiting for new data (test)")
    conf = {"landing_uri": landing.uri}
    ingested = pipeline.ingest(churn, conf, tracking)
    assert ingested["trigger_reason"] == "drift seen; waiting for new data (test)"
    candidate = pipeline.train(churn, ingested, pipeline.validate(ingested, tracking), conf,
                               LINEAGE, tracking)
    run = tracking.client.get_run(candidate["run_id"])
    assert run.data.tags["ctcd.trigger_reason"] == "drift seen; waiting for new data (test)"
    assert pending_retrain(tracking, churn.model_name) is None  # it was consumed
