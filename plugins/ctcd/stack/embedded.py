"""The stack behind `make demo`: MLflow tracking server and Airflow 3 (api-server, scheduler,
dag-processor, triggerer) as local processes, all state under ``CTCD_HOME``.

Two profiles run the same DAGs:

- ``embedded`` (default): SQLite metadata DB, LocalExecutor, MLflow on SQLite.
- ``scale``: the cluster layout of ``docker-compose.yaml`` without containers. A private
  PostgreSQL cluster holds Airflow's metadata DB (and Celery's results) and MLflow's backend
  store, Redis is the Celery broker, and tasks run on N ``airflow celery worker`` processes
  with distinct hostnames, which start the model servers (the local deployer's host).

Each process runs in its own session with a pid file under ``<home>/run``; ``stop`` stops
exactly those pids (and their children), nothing else. ``up`` is idempotent: a component
whose recorded pid is alive is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psutil

from ctcd.settings import get_settings
from ctcd.stack.config import CeleryConfig, airflow_env, celery_worker_env
from ctcd.stack.postgres import PostgresCluster
from ctcd.stack.processes import free_port, port_is_free, spawn, stop_process_tree, wait_http

Profile = Literal["embedded", "scale"]
PROFILES: tuple[Profile, ...] = ("embedded", "scale")


@dataclass(frozen=True)
class Ports:
    airflow: int = int(os.environ.get("CTCD_AIRFLOW_PORT", "8080"))
    mlflow: int = int(os.environ.get("CTCD_MLFLOW_PORT", "5000"))
    postgres: int = int(os.environ.get("CTCD_POSTGRES_PORT", "15432"))
    redis: int = int(os.environ.get("CTCD_REDIS_PORT", "16379"))


class Stack:
    COMPONENTS = ("mlflow", "api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(
        self,
        home: Path | None = None,
        ports: Ports | None = None,
        *,
        profile: Profile | None = None,
        workers: int = 2,
    ) -> None:
        self.home = (home or get_settings().home).resolve()
        self.ports = ports or Ports()
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.airflow_home = self.home / "airflow"
        self.mlflow_dir = self.home / "mlflow"
        recorded = self._recorded()
        self.profile: Profile = profile or (
            "scale" if recorded.get("profile") == "scale" else "embedded"
        )
        self.workers = workers if profile else int(str(recorded.get("workers", workers)))
        self.postgres = PostgresCluster(self.home, self.ports.postgres)

    @property
    def components(self) -> tuple[str, ...]:
        if self.profile == "embedded":
            return self.COMPONENTS
        return ("postgres", "redis", *self.COMPONENTS, *self.worker_names)

    @property
    def worker_names(self) -> tuple[str, ...]:
        return tuple(f"worker-{index}" for index in range(1, self.workers + 1))

    def _recorded(self) -> dict[str, object]:
        path = self.run_dir / "profile.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    # -- urls ------------------------------------------------------------------------------
    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.airflow}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow}"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    def _airflow_env(self) -> dict[str, str]:
        if self.profile == "embedded":
            return airflow_env(self.airflow_home, api_port=self.ports.airflow)
        return airflow_env(
            self.airflow_home,
            api_port=self.ports.airflow,
            database_url=self.postgres.url("airflow"),
            celery=CeleryConfig(
                broker_url=self.broker_url,
                result_backend=self.postgres.url("airflow", driver="db+postgresql+psycopg2"),
            ),
        )

    def mlflow_backend_store(self) -> str:
        if self.profile == "embedded":
            return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        return self.postgres.url("mlflow")

    def env(self) -> dict[str, str]:
        return {
            **self._airflow_env(),
            "CTCD_HOME": str(self.home),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # No MLflow background jobs (GenAI scorers): one process less on a small machine.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
            "CTCD_TRAINING_THREADS": os.environ.get("CTCD_TRAINING_THREADS", "1"),
            # batch_inference's default predictions database (output_conn_id ctcd_predictions).
            "AIRFLOW_CONN_CTCD_PREDICTIONS": os.environ.get(
                "AIRFLOW_CONN_CTCD_PREDICTIONS",
                "sqlite://" + quote(str(self.home / "predictions.db"), safe="")),
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
        self,
        name: str,
        argv: list[str],
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes] | None:
        if self.pid(name) is not None:
            return None
        if port is not None and not port_is_free(port):
            variable = {"mlflow": "MLFLOW", "postgres": "POSTGRES", "redis": "REDIS"}.get(
                name, "AIRFLOW"
            )
            raise RuntimeError(
                f"Port {port} for {name} is taken by another program. Stop it, or choose another "
                f"port: CTCD_{variable}_PORT=<port> make demo"
            )
        proc = spawn(
            argv,
            log_path=self.log_dir / f"{name}.log",
            env={**self.env(), **(env or {})},
            cwd=self.home,
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time()}")
        return proc

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, *, timeout: float = 300.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "profile.json").write_text(
            json.dumps({"profile": self.profile, "workers": self.workers})
        )
        if self.profile == "scale":
            self._up_backing_services(timeout)
        mlflow = self._start(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                self.mlflow_backend_store(),
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
        for name in self.worker_names if self.profile == "scale" else ():
            self._start(
                name,
                [*airflow, "celery", "worker", "--celery-hostname", name],
                env=celery_worker_env(name, log_server_port=free_port()),
            )
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
        if self.profile == "scale":
            self.wait_workers(timeout=timeout)

    def _up_backing_services(self, timeout: float) -> None:
        """PostgreSQL (databases ``airflow`` and ``mlflow``) and Redis, ready before the rest."""
        self.postgres.init()
        postgres = self._start("postgres", self.postgres.server_argv(), port=self.ports.postgres)
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise RuntimeError(
                "redis-server not found: install it (Debian: apt-get install redis-server)"
            )
        redis_dir = self.home / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        redis = self._start(
            "redis",
            [
                redis_server, "--bind", "127.0.0.1", "--port", str(self.ports.redis),
                "--dir", str(redis_dir), "--appendonly", "yes", "--save", "",
                "--daemonize", "no",
            ],
            port=self.ports.redis,
        )
        self.postgres.wait_ready(timeout=timeout, pid=postgres.pid if postgres else None)
        for database in ("airflow", "mlflow"):
            self.postgres.create_database(database)
        _wait_redis(self.ports.redis, timeout=timeout, pid=redis.pid if redis else None)

    def wait_workers(self, *, timeout: float) -> None:
        """Wait until every Celery worker answers a ping over the broker."""
        from celery import Celery

        app = Celery(broker=self.broker_url)
        expected = {f"celery@{name}" for name in self.worker_names}
        deadline = time.monotonic() + timeout
        answered: set[str] = set()
        try:
            while True:
                for name in self.worker_names:
                    if self.pid(name) is None:
                        raise RuntimeError(
                            f"Celery worker {name} exited; see {self.log_dir / f'{name}.log'}"
                        )
                replies = app.control.ping(destination=sorted(expected - answered), timeout=1.0)
                answered |= {node for reply in replies for node in reply}
                if expected <= answered:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Celery workers {sorted(expected - answered)} did not answer a ping "
                        f"within {timeout:.0f}s; see their logs in {self.log_dir}"
                    )
                time.sleep(1)
        finally:
            app.close()

    def status(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in self.components}

    def down(self) -> list[str]:
        stopped = []
        for name in reversed(self.components):
            pid = self.pid(name)
            if pid is not None:
                if name == "postgres":
                    PostgresCluster.stop(pid)
                    stopped.append(name)
                elif stop_process_tree(pid):
                    stopped.append(name)
            self._pid_file(name).unlink(missing_ok=True)
        return stopped


def _wait_redis(port: int, *, timeout: float, pid: int | None) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError as err:
                if pid is not None and not psutil.pid_exists(pid):
                    raise RuntimeError(f"redis-server (pid {pid}) exited: {err}") from err
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis on 127.0.0.1:{port} not ready: {err}") from err
            time.sleep(0.3)
    finally:
        client.close()
