"""Model files: the shipped ones load; a broken one says which file, line and field, and
never hides the good ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import ModelFiles

from ctcd.errors import InvalidParams
from ctcd.models import InvalidModelFile, load_model, load_models
from ctcd.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "include" / "models"


def test_the_shipped_models_load() -> None:
    loaded = load_models(SHIPPED)
    assert loaded.errors == {}
    tasks = {key: (m.model_name, m.task, m.gate_metric) for key, m in loaded.models.items()}
    assert tasks == {
        "churn": ("churn-classifier", "binary", "roc_auc"),
        "wine": ("wine", "multiclass", "f1_macro"),
        "diabetes": ("diabetes-progression", "regression", "rmse"),
    }
    churn = loaded.models["churn"]
    assert (churn.training_dag_id, churn.batch_dag_id, churn.monitoring_dag_id) == (
        "churn_training", "churn_batch_inference", "churn_monitoring")


def test_the_shortest_file_names_its_data_set(model_files: ModelFiles) -> None:
    (model_files.folder / "tiny.yaml").write_text("dataset: wine\n")
    model = load_model("tiny")
    assert (model.model_name, model.task, model.gate_metric) == ("tiny", "multiclass", "f1_macro")
    assert model.deployment.strategy == "blue_green" and model.training.window.partitions == 1
    assert model.schedule.cron == "0 0 * * *" and model.schedule.on_new_data


def _error(folder: Path, text: str, name: str = "bad") -> str:
    (folder / f"{name}.yaml").write_text(text)
    with pytest.raises(InvalidModelFile) as caught:
        load_model(name)
    message = caught.value.message
    assert str(folder / f"{name}.yaml") in message
    return message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dataset: wine\ngate:\n  metric: roc_auc\n",
         "line 3, gate.metric: 'roc_auc' is not a metric of multiclass models; choose one of "
         "f1_macro, accuracy, log_loss"),
        ("dataset: churn\ngate:\n  thresold: 3\n", "line 3, unknown field 'gate.thresold'"),
        ("dataset: churn\ntrainer:\n  function: my_models.churn\n",
         "is not `module.path:function`"),
        ("dataset: churn\ntrainer: {estimator: ridge, function: a.b:c}\n",
         "give `estimator` or `function`, not both"),
        ("dataset: nope\n", "dataset: No data set spec 'nope'"),
        ("dataset: churn\ntask: regression\n",
         "task: 'regression' does not fit: its data set's label has classes [0, 1]"),
        ("dataset: diabetes\ntask: binary\n",
         "task: 'binary' does not fit: its data set's label has no `classes`"),
        ("dataset: wine\ntask: binary\n", "label has 3 classes, which makes it multiclass"),
        ("dataset: diabetes\ntrainer: {estimator: logistic_regression}\n",
         "logistic_regression is a classifier"),
        ("dataset: churn\nbatch:\n  params:\n    chunk_rows: -1\n",
         "line 4, field 'batch.params.chunk_rows'"),
        ("dataset: churn\nmonitoring:\n  params: {psi_treshold: 1}\n",
         "unknown field 'monitoring.params.psi_treshold'"),
        ("- dataset: churn\n", "it must hold a mapping"),
        ("dataset: [churn\n", "not valid YAML"),
        ("dataset: churn\ndeployment:\n  strategy: yolo\n", "line 3, field 'deployment.strategy'"),
    ],
)
def test_a_broken_file_names_the_file_line_and_field(
    model_files: ModelFiles, text: str, says: str
) -> None:
    assert says in _error(model_files.folder, text)


def test_a_missing_file_lists_the_known_models(model_files: ModelFiles) -> None:
    model_files.write("churn")
    with pytest.raises(InvalidParams, match=r"No model file 'nope'.*Known models: \['churn'\]"):
        load_model("nope")


def test_broken_files_never_hide_the_good_ones(model_files: ModelFiles) -> None:
    model_files.write("good")
    (model_files.folder / "broken.yaml").write_text("dataset: nope\n")
    model_files.write("twin_a", name="same-name")
    model_files.write("twin_b", name="same-name")
    loaded = load_models()
    assert list(loaded.models) == ["good"]
    assert sorted(Path(p).name for p in loaded.errors) == ["broken.yaml", "twin_a.yaml",
                                                          "twin_b.yaml"]
    twin = loaded.errors[str(model_files.folder / "twin_a.yaml")]
    assert "'same-name' is also used by twin_b.yaml" in twin


def test_a_file_name_that_cannot_name_dags_is_refused(model_files: ModelFiles) -> None:
    assert "letters, digits, - and _ only" in _error(model_files.folder, "dataset: churn\n",
                                                     name="my.model")
