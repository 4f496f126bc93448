"""Project settings, read from the environment (prefix ``CTCD_``).

Every path of runtime state hangs off one directory, ``CTCD_HOME`` (default: ``.state``
in the project checkout), so a demo or a test run leaves nothing anywhere else.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTCD_", extra="ignore")

    home: Path = Field(
        default=PROJECT_ROOT / ".state",
        description="Root of all runtime state: data snapshots, model-server registry, logs.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; falls back to MLFLOW_TRACKING_URI, then a local "
        "SQLite store under `home`.",
    )
    datasets_dir: Path = Field(
        default=PROJECT_ROOT / "include" / "datasets",
        description="Where data set specs (`<name>.yaml`) are kept.",
    )
    model_name: str = Field(
        default="churn-classifier",
        description="Registered model name used by the continuous_training DAG.",
    )
    deployer: str = Field(
        default="local",
        description="Model deployer backend: `local`, `kubernetes`, or a dotted path "
        "`package.module:Class` to a class satisfying ctcd.deployers.ModelDeployer.",
    )
    training_threads: int | None = Field(
        default=None,
        ge=1,
        description="Cap on the BLAS/OpenMP threads training and evaluation use (None: the "
        "libraries' default, all cores). On a small machine shared with Airflow and model "
        "servers, 1 avoids OpenMP spin-waiting against other processes.",
    )
    server_host: str = Field(default="127.0.0.1", description="Interface model servers bind to.")
    server_port_range: tuple[int, int] = Field(
        default=(8100, 8999), description="Ports the local deployer allocates from."
    )

    @cached_property
    def data_dir(self) -> Path:
        return self.home / "data"

    @cached_property
    def servers_dir(self) -> Path:
        return self.home / "servers"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def tracking_uri(self) -> str:
        import os

        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"


def thread_limits() -> AbstractContextManager[object]:
    """A context capping native thread pools at ``training_threads`` (no cap when unset)."""
    threads = get_settings().training_threads
    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def get_settings() -> Settings:
    """Settings are re-read on every call so tests and tasks can change the environment."""
    return Settings()
