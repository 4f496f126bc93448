"""docker-compose.yaml, checked without a Docker engine (none runs on these machines): the
file is parsed and its services, dependencies, health checks and shared settings checked;
`docker-compose config` validates it where the client is installed (.ci/run installs it).
`make test-scale` runs the same layout as local processes."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from ctcd.settings import PROJECT_ROOT, Settings
from ctcd.stack.config import project_airflow_env

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "airflow-worker-2",
}
WORKERS = ("airflow-worker", "airflow-worker-2")
SHARED = (
    "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__FERNET_KEY", "MLFLOW_TRACKING_URI", "CTCD_HOME",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_the_official_services_plus_mlflow_and_the_model_server(
    services: dict[str, dict[str, Any]]
) -> None:
    assert set(services) == {
        "postgres", "redis", "mlflow", "model-server", *AIRFLOW_SERVICES,
    }
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker --celery-hostname airflow-worker",
        "airflow-worker-2": "celery worker --celery-hostname airflow-worker-2",
    }
    assert _env(services["airflow-init"])["_AIRFLOW_DB_MIGRATE"] == "true"


def test_every_long_running_service_has_a_health_check(
    services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        if name == "airflow-init":
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    for worker in WORKERS:
        assert f"celery@{worker}" in services[worker]["healthcheck"]["test"][1]
    assert "/health" in services["mlflow"]["healthcheck"]["test"][-1]


def test_dependencies_wait_for_health_and_for_the_migration(
    services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        for target, condition in _depends(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} is awaited but has none"
            else:
                assert (target, condition) == ("airflow-init", "service_completed_successfully")
    for name in AIRFLOW_SERVICES:
        depends = _depends(services[name])
        assert depends["postgres"] == depends["redis"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"] == "service_completed_successfully", name
    assert _depends(services["airflow-worker"])["airflow-apiserver"] == "service_healthy"
    assert _depends(services["airflow-worker"])["mlflow"] == "service_healthy"
    assert _depends(services["mlflow"]) == {"postgres": "service_healthy"}
    assert _depends(services["model-server"]) == {"mlflow": "service_healthy"}


def test_airflow_services_share_the_secret_database_broker_and_api_address(
    services: dict[str, dict[str, Any]]
) -> None:
    envs = {name: _env(services[name]) for name in AIRFLOW_SERVICES}
    for key in SHARED:
        values = {name: env.get(key) for name, env in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (key, values)
    env = envs["airflow-apiserver"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"]
    api = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (api.hostname, api.path) == ("airflow-apiserver", "/execution/")
    assert f"{api.port}:{api.port}" in services["airflow-apiserver"]["ports"]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3; the pinned one is psycopg2.
        assert "postgresql+psycopg2://" in env[key] and urlparse(env[key]).hostname == "postgres"
    assert urlparse(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"


def test_airflow_services_carry_the_project_airflow_settings(
    services: dict[str, dict[str, Any]]
) -> None:
    """The values ctcd.airflow_config (through project_airflow_env) defines, not a copy."""
    project = project_airflow_env()
    assert "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES" in project
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert {key: env.get(key) for key in project} == project, name


def test_mlflow_keeps_its_store_in_postgres_and_answers_the_workers(
    services: dict[str, dict[str, Any]]
) -> None:
    mlflow = services["mlflow"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in mlflow["command"][1:])
    store = urlparse(flags["backend-store-uri"])
    assert (store.scheme, store.hostname) == ("postgresql+psycopg2", "postgres")
    assert store.path == "/mlflow"
    init_sql = PROJECT_ROOT / "docker" / "postgres" / "10-mlflow.sql"
    assert "CREATE DATABASE mlflow" in init_sql.read_text()
    mount = f"./{init_sql.relative_to(PROJECT_ROOT)}:/docker-entrypoint-initdb.d/10-mlflow.sql:ro"
    assert mount in services["postgres"]["volumes"]
    artifacts = flags["artifacts-destination"]
    assert any(volume.endswith(f":{artifacts}") for volume in mlflow["volumes"])
    tracking = urlparse(_env(services["airflow-worker"])["MLFLOW_TRACKING_URI"])
    assert tracking.netloc in flags["allowed-hosts"].split(",")  # MLflow checks Host headers
    assert mlflow["init"] is True


def test_workers_are_the_model_server_host(services: dict[str, dict[str, Any]]) -> None:
    worker = services["airflow-worker"]
    env = _env(worker)
    settings = Settings(server_host=env["CTCD_SERVER_HOST"],
                        server_port_range=yaml.safe_load(env["CTCD_SERVER_PORT_RANGE"]))
    low, high = settings.server_port_range
    assert settings.server_host == "0.0.0.0"
    assert worker["ports"] == [f"{low}-{high}:{low}-{high}"]  # one to one
    assert worker["init"] is True  # reaps the detached model servers

    second = services["airflow-worker-2"]
    assert second["profiles"] == ["scale"]
    assert second["network_mode"] == second["pid"] == "service:airflow-worker"
    assert second["init"] is True
    second_env = _env(second)
    assert second_env["CTCD_SERVER_PORT_RANGE"] == env["CTCD_SERVER_PORT_RANGE"]
    assert second_env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] != env.get(
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793"
    )


def test_the_second_workers_hostname_callable_names_it(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the task runner records it (airflow.sdk's get_hostname reads [core] hostname_callable)."""
    from airflow.sdk.api.client import get_hostname

    env = _env(services["airflow-worker-2"])
    for key in ("CTCD_WORKER_HOSTNAME", "AIRFLOW__CORE__HOSTNAME_CALLABLE"):
        monkeypatch.setenv(key, env[key])
    assert get_hostname() == "airflow-worker-2"


def test_images_are_built_from_the_projects_dockerfiles(
    services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        if "build" in service:
            assert (PROJECT_ROOT / service["build"]["dockerfile"]).is_file(), name
    assert services["model-server"]["build"]["dockerfile"] == "docker/model-server.Dockerfile"
    assert services["airflow-scheduler"]["build"]["dockerfile"] == "docker/airflow.Dockerfile"


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (.ci/run installs it)")
def test_docker_compose_config_accepts_every_profile() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--profile", "scale", "--profile", "serving",
         "config", "--services"],
        capture_output=True, text=True, check=False, cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "postgres", "redis", "mlflow", "model-server", *AIRFLOW_SERVICES,
    }
