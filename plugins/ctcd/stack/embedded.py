"""The embedded stack: MLflow tracking server and Airflow 3 (api-server, scheduler,
dag-processor, triggerer) as local processes, all state under ``CTCD_HOME``.

Each process runs in its own session with a pid file under ``<home>/run``; ``stop`` stops
exactly those pids (and their children), nothing else. ``up`` is idempotent: a component
whose recorded pid is alive is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from ctcd.settings import get_settings
from ctcd.stack.config import airflow_env
from ctcd.stack.processes import port_is_free, spawn, stop_process_tree, wait_http


@dataclass(frozen=True)
class Ports:
    airflow: int = int(os.environ.get("CTCD_AIRFLOW_PORT", "8080"))
    mlflow: int = int(os.environ.get("CTCD_MLFLOW_PORT", "5000"))


class Stack:
    COMPONENTS = ("mlflow", "api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(self, home: Path | None = None, ports: Ports | None = None) -> None:
        self.home = (home or get_settings().home).resolve()
        self.ports = ports or Ports()
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.airflow_home = self.home / "airflow"
        self.mlflow_dir = self.home / "mlflow"

    # -- urls ------------------------------------------------------------------------------
    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.airflow}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    def env(self) -> dict[str, str]:
        return {
            **airflow_env(self.airflow_home, api_port=self.ports.airflow),
            "CTCD_HOME": str(self.home),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # No MLflow background jobs (GenAI scorers): one process less on a small machine.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
            "CTCD_TRAINING_THREADS": os.environ.get("CTCD_TRAINING_THREADS", "1"),
        }

    # -- pid files -------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The recorded pid of a component, if that process is still alive."""
        path = self._pid_file(name)
        if not path.exists():
            return None
        pid, _, started = path.read_text().partition(" ")
        try:
            proc = psutil.Process(int(pid))
            # A reused pid is not ours: the start time must match what was recorded.
            if started and abs(proc.create_time() - float(started)) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.NoSuchProcess, ValueError):
            return None
        return int(pid)

    def _start(
        self, name: str, argv: list[str], port: int | None = None
    ) -> subprocess.Popen[bytes] | None:
        if self.pid(name) is not None:
            return None
        if port is not None and not port_is_free(port):
            raise RuntimeError(
                f"Port {port} for {name} is taken by another program. Stop it, or choose another "
                f"port: CTCD_{'MLFLOW' if name == 'mlflow' else 'AIRFLOW'}_PORT=<port> make demo"
            )
        proc = spawn(argv, log_path=self.log_dir / f"{name}.log", env=self.env(), cwd=self.home)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time()}")
        return proc

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, *, timeout: float = 300.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        mlflow = self._start(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.mlflow_dir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports.mlflow),
                "--workers",
                "1",
            ],
            port=self.ports.mlflow,
        )
        if self.pid("api-server") is None:
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                check=True,
                env={**os.environ, **self.env()},
                stdout=(self.log_dir / "db-migrate.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        airflow = [sys.executable, "-m", "airflow"]
        api = self._start(
            "api-server",
            [*airflow, "api-server", "--port", str(self.ports.airflow)],
            port=self.ports.airflow,
        )
        for name in ("scheduler", "dag-processor", "triggerer"):
            self._start(name, [*airflow, name])
        wait_http(
            f"{self.mlflow_url}/health",
            timeout=timeout,
            process=mlflow,
            log_path=self.log_dir / "mlflow.log",
        )
        wait_http(
            f"{self.airflow_url}/api/v2/monitor/health",
            timeout=timeout,
            process=api,
            log_path=self.log_dir / "api-server.log",
        )

    def status(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in self.COMPONENTS}

    def down(self) -> list[str]:
        stopped = []
        for name in reversed(self.COMPONENTS):
            pid = self.pid(name)
            if pid is not None and stop_process_tree(pid):
                stopped.append(name)
            self._pid_file(name).unlink(missing_ok=True)
        return stopped
