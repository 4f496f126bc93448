"""What the deployments view's tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ops_dag(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The operations DAG in the metadata database (the page records actions as its runs),
    as the dag-processor would put it there."""
    folder = tmp_path_factory.mktemp("ops-dags")
    (folder / "model_server_ops.py").write_text((ROOT / "dags" / "model_server_ops.py")
                                               .read_text())
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], check=True,
                   capture_output=True, env={**os.environ,
                                             "AIRFLOW__CORE__DAGS_FOLDER": str(folder)})
