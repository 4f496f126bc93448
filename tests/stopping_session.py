"""A session for tests/test_stopping.py to stop (not collected by itself): a test with a
server fixture runs a DAG with ``dag.test()`` (which leaves Airflow's SIGTERM handler in
this process) and then waits to be stopped, or (``-k tracking``) a test waits with the
session's MLflow server running; a test after it must never run. Each step leaves
a file in ``CTCD_STOP_MARKS``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctcd.stack.processes import spawn, stop_process_tree

MARKS = Path(os.environ.get("CTCD_STOP_MARKS", "."))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    proc = spawn([sys.executable, "-c", "import time; time.sleep(600)"],
                 log_path=tmp_path / "server.log")
    (MARKS / "server").write_text(str(proc.pid))
    yield proc.pid
    stop_process_tree(proc.pid)
    (MARKS / "teardown").write_text("")


def test_runs_a_dag_then_waits(airflow_home: Path, ctcd_home: Path, server: int) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags" /
                                "data_producer.py"))
    run = bag.dags["data_producer"].test(run_conf={"date": "2026-11-20", "rows": 100,
                                                    "format": "csv"})
    assert str(run.state) == "success"
    (MARKS / "waiting").write_text("")
    time.sleep(300)


def test_uses_the_tracking_server_then_waits(mlflow_server: str) -> None:
    from tests.conftest import _SESSION_SERVERS

    tree = _SESSION_SERVERS["mlflow"].tree
    (MARKS / "tracking").write_text(" ".join(str(p.pid) for p in tree))
    (MARKS / "waiting").write_text("")
    time.sleep(300)


def test_never_runs() -> None:
    (MARKS / "second").write_text("")
