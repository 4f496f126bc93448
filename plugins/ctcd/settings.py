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


class KubernetesSettings(BaseSettings):
    """Settings of the ``kubernetes`` deployer (environment ``CTCD_K8S_*``)."""

    model_config = SettingsConfigDict(env_prefix="CTCD_K8S_", extra="ignore")

    conn_id: str = Field(
        default="kubernetes_default",
        description="Airflow connection of KubernetesHook (in-cluster, kubeconfig file or "
        "context); without such a connection: in-cluster config, else ~/.kube/config.",
    )
    namespace: str = Field(default="default", description="Namespace of the model servers.")
    mode: str = Field(
        default="deployment",
        description="`deployment` (Deployment + Service), `kserve` (an InferenceService; "
        "KServe must be installed) or `auto` (kserve where its CRD is installed).",
    )
    image: str = Field(
        default="ctcd-model-server:0.1.0",
        description="Model-server image (runs `python -m ctcd.serving`, port 8080).",
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pods' imagePullPolicy.")
    replicas: int = Field(default=1, ge=1, description="Model-server pods per server.")
    cpu_request: str = Field(default="250m", description="CPU request of a server pod.")
    cpu_limit: str = Field(default="1", description="CPU limit of a server pod.")
    memory_request: str = Field(default="512Mi", description="Memory request of a server pod.")
    memory_limit: str = Field(default="1Gi", description="Memory limit of a server pod.")
    service_type: str = Field(default="ClusterIP", description="ClusterIP or NodePort.")
    service_url: str = Field(
        default="http://{service}.{namespace}.svc.cluster.local:{port}",
        description="How callers reach a Service: placeholders {service}, {namespace}, "
        "{port}, {node_port}. Outside the cluster use an ingress, a NodePort "
        "(http://<node>:{node_port}) or a port-forward address.",
    )
    pod_url: str = Field(
        default="http://{pod_ip}:{port}",
        description="How the deployer reaches one pod's admin API (placeholders {pod_ip}, "
        "{pod}, {port}); strategies load versions and move traffic on every pod.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI as the pods see it; default the project's own.",
    )
    service_account: str | None = Field(default=None, description="Pods' service account.")
    conflict_retries: int = Field(
        default=5, ge=0, description="Retries of a write refused with 409 (resourceVersion).",
    )
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between polls.")


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
    models_dir: Path = Field(
        default=PROJECT_ROOT / "include" / "models",
        description="Where model files (`<model>.yaml`) are kept: one file per model, "
        "whose DAGs are generated from it.",
    )
    code_dir: Path = Field(
        default=PROJECT_ROOT / "include",
        description="Put on `sys.path` when a model file's trainer function is imported, "
        "so `trainer.function: examples.diabetes:train` finds include/examples/diabetes.py. "
        "Code in an installed package needs nothing here.",
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
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="The kubernetes deployer's settings."
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
