"""Every DAG imports cleanly, is tagged, retries, and does no I/O or heavy imports at parse time."""

from __future__ import annotations

import itertools
import json
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


def test_continuous_training_shape(dagbag) -> None:
    dag = dagbag.dags["continuous_training"]
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
    assert {"min_roc_auc", "source", "hyperparameters", "snapshot_date"} <= set(dag.params)


PROBE = r"""
import json, socket, sys, importlib.util
def refuse(*a, **k):
    raise RuntimeError("network access at DAG import time")
socket.socket.connect = refuse
socket.create_connection = refuse
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
heavy = [m for m in ("mlflow", "sklearn", "pandas", "skops", "kubernetes") if m in sys.modules]
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
