"""Every DAG imports cleanly, is tagged, retries, and does no I/O or heavy imports at parse time."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_imports(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= len(DAG_FILES) >= 1


def test_dags_have_tags_retries_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has retries={task.retries}"
        assert dag.default_args.get("retries", 0) >= 2, f"{dag_id} default retries < 2"


@pytest.mark.parametrize("model", ["churn", "wine", "diabetes"])
def test_each_model_file_has_its_three_dags(dagbag, model: str) -> None:
    dag = dagbag.dags[f"{model}_training"]
    order = [
        "ingest",
        "validate",
        "train",
        "evaluate",
        "deployment_trigger",
        "register",
        "deploy",
        "verify",
        "promote",
    ]
    assert set(order) <= set(dag.task_dict)
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.task_dict[upstream].get_flat_relative_ids(upstream=False)
    assert type(dag.schedule).__name__ == "AssetOrTimeSchedule"  # new data, and daily
    assert dag.max_active_runs == 1
    assert {"threshold", "source", "hyperparameters", "snapshot_date", "seed"} <= set(dag.params)
    assert f"model:{model}" in dag.tags
    for kind in ("batch_inference", "monitoring"):
        assert f"model:{model}" in dagbag.dags[f"{model}_{kind}"].tags
    assert dag.doc_md.startswith("### ")  # the model's own heading, then the generic doc


def test_a_broken_model_file_is_an_import_error_and_hides_no_other_model(
    airflow_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    models = tmp_path / "models"
    models.mkdir()
    (models / "good.yaml").write_text("dataset: churn\n")
    (models / "broken.yaml").write_text("dataset: wine\ngate:\n  metric: roc_auc\n")
    (models / "nodata.yaml").write_text("dataset: nope\n")
    monkeypatch.setenv("CTCD_MODELS_DIR", str(models))
    bag = DagBag(dag_folder=str(DAGS))
    assert {"good_training", "good_batch_inference", "good_monitoring"} <= set(bag.dags)
    assert not any(d.startswith(("broken_", "nodata_")) for d in bag.dags)
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("model_files.py")
    assert f"{models / 'broken.yaml'} is invalid: line 3, gate.metric: 'roc_auc' is not a " \
           "metric of multiclass models" in error
    assert f"{models / 'nodata.yaml'} is invalid: dataset: No data set spec 'nope'" in error


def test_parsing_the_dags_of_many_models_stays_cheap(
    airflow_home, tmp_path: Path
) -> None:
    """The DAG folder with 30 model files parses within a few seconds on top of Airflow's
    own import (each file is read and checked against its spec: YAML and pydantic only)."""
    models = tmp_path / "models"
    models.mkdir()
    shipped = Path(__file__).resolve().parents[2] / "include" / "models"
    for i in range(10):
        for example in ("churn", "wine", "diabetes"):
            text = (shipped / f"{example}.yaml").read_text()
            text = "\n".join(line for line in text.splitlines() if not line.startswith("name:"))
            (models / f"{example}_{i}.yaml").write_text(text + "\n")
    result = subprocess.run(
        [sys.executable, "-c", TIMED_PARSE, str(DAGS)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CTCD_MODELS_DIR": str(models)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {} and report["dags"] == 30 * 3 + 2
    assert report["seconds"] < 20, report  # measured here: about 5 s for 92 DAGs


TIMED_PARSE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
start = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"seconds": time.monotonic() - start, "dags": len(bag.dags),
                  "errors": {k: v[:300] for k, v in bag.import_errors.items()}}))
"""


PROBE = r"""
import json, socket, sys, importlib.util
def refuse(*a, **k):
    raise RuntimeError("network access at DAG import time")
socket.socket.connect = refuse
socket.create_connection = refuse
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
heavy = [m for m in ("mlflow", "sklearn", "pandas", "skops", "kubernetes", "xgboost", "lightgbm")
         if m in sys.modules]
print(json.dumps({"heavy": heavy}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_no_io_or_heavy_imports_at_parse_time(dag_file: Path, airflow_home) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"{dag_file.name} imports {report['heavy']} at parse time"
