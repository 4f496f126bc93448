"""Configuration of the embedded Airflow: one function that returns the environment.

The same environment is used by `make demo`, by the tests and by the model servers the
tasks start, so what the demo runs is what the tests check.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ctcd.settings import PROJECT_ROOT

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
WORKER_HOSTNAME_ENV = "CTCD_WORKER_HOSTNAME"


@dataclass(frozen=True)
class CeleryConfig:
    """Where the CeleryExecutor's queue and results live (the scale profile)."""

    broker_url: str
    result_backend: str
    concurrency: int = 2


def project_airflow_env() -> dict[str, str]:
    """Airflow settings the project's own code needs, wherever Airflow runs.

    Modules may contribute with a module-level ``AIRFLOW_ENV`` dict in
    ``ctcd.airflow_config`` (e.g. XCom deserialization allow-lists).
    """
    env = {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }
    try:
        contributed = importlib.import_module("ctcd.airflow_config").AIRFLOW_ENV
    except ModuleNotFoundError:
        contributed = {}
    env.update(contributed)
    return env


def airflow_env(
    airflow_home: Path,
    *,
    api_port: int = 8080,
    dags_folder: Path = PROJECT_ROOT / "dags",
    plugins_folder: Path = PROJECT_ROOT / "plugins",
    parallelism: int = 4,
    database_url: str | None = None,
    celery: CeleryConfig | None = None,
) -> dict[str, str]:
    """Environment of an Airflow 3 living in ``airflow_home``: SQLite and the LocalExecutor
    (embedded), or ``database_url`` (PostgreSQL) and the CeleryExecutor with ``celery``."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    passwords = airflow_home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
    secret_file = airflow_home / "jwt_secret"
    if not secret_file.exists():
        import secrets

        secret_file.write_text(secrets.token_urlsafe(32))
    secret = secret_file.read_text().strip()
    api_url = f"http://127.0.0.1:{api_port}"
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            database_url or f"sqlite:///{airflow_home / 'airflow.db'}"
        ),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        # Model servers started by tasks inherit this: log served requests for the
        # model_monitoring DAG (ctcd.monitoring). Lower it on busy production endpoints.
        "CTCD_SERVER_REQUEST_LOG_SAMPLE_RATE": os.environ.get(
            "CTCD_SERVER_REQUEST_LOG_SAMPLE_RATE", "1.0"
        ),
    }
    if celery is not None:
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": celery.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": celery.result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(celery.concurrency),
            }
        )
    env.update(project_airflow_env())
    return env


def celery_worker_env(name: str, log_server_port: int) -> dict[str, str]:
    """What sets one Celery worker apart from another on the same machine: the hostname its
    task instances record (``[core] hostname_callable``) and the port of its log server."""
    return {
        WORKER_HOSTNAME_ENV: name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "ctcd.stack.config.worker_hostname",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port),
    }


def worker_hostname() -> str:
    """``[core] hostname_callable`` of a worker: its name, else the machine's FQDN."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()
