"""Model server settings: command-line options, or environment variables ``CTCD_SERVER_*``
(e.g. ``CTCD_SERVER_ADMIN_TOKEN``). Prefer the environment for tokens: command lines are
visible to every user of the machine."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CTCD_SERVER_", extra="ignore", cli_kebab_case=True,
        cli_prog_name="python -m ctcd.serving", cli_implicit_flags=True,
    )

    model_uri: str = Field(description="MLflow model URI served at start (models:/name/3, "
                           "models:/name@alias, runs:/<id>/model, or a local path).")
    model_name: str = Field(description="Model name reported in headers, V2 routes, metrics.")
    model_version: str = Field(description="Version label of the model given by --model-uri.")
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port to bind.")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535, description="Also serve V2 over gRPC "
        "(inference.GRPCInferenceService) on this port; off when unset.")
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes (SO_REUSEPORT).")
    token: SecretStr | None = Field(
        default=None, description="If set, prediction routes require 'Bearer <token>'.")
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the admin API. Without one, the admin API "
        "answers only when the server is bound to a loopback address.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: MLFLOW_TRACKING_URI.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1,
                                description="Largest request body accepted (413 above).")
    batching: bool = Field(default=True, description="Merge concurrent requests per version.")
    max_batch_rows: int = Field(default=4096, ge=1, description="Most rows in one predict call.")
    threads: int = Field(
        default=1, ge=0, le=256, description="Native threads (OpenMP, BLAS) of each predict "
        "call; 0: the libraries' default, one per core. Batches are small and the server's "
        "own work needs a core: one thread avoids spin-waiting (a 1-row gradient-boosting "
        "predict burns twice the CPU on two threads in the same time).")
    compiled: bool = Field(
        default=True, description="Answer with a version's compiled model (its ONNX graph "
        "in ONNX Runtime) when `ctcd models compile` verified one, after checking it again at "
        "load; --no-compiled serves the original model.")
    compiled_threads: int | None = Field(
        default=None, ge=0, le=256, description="ONNX Runtime's intra-op threads for a "
        "compiled model; default: the server's cores shared among its workers (at least one "
        "each); 0: one per core.")
    max_batch_wait_ms: float = Field(
        default=0.0, ge=0, le=1000, description="Extra time a batch waits for more rows; 0 "
        "means adaptive: batch only what queued while the model was busy.")
    request_log_sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of requests whose inputs and outputs are "
        "logged for monitoring.")
    request_log_path: Path | None = Field(
        default=None, description="SQLite file of the request log; default "
        "$CTCD_HOME/serving/requests.sqlite.")
    shadow_max_queue: int = Field(
        default=1000, ge=1, le=1_000_000, description="Copies of live requests waiting for "
        "a shadow version (PUT /admin/shadow); when it is full, copies are dropped and "
        "counted, never waited for.")
    shadow_samples: int = Field(
        default=100, ge=0, le=10_000, description="Disagreeing or failed shadow requests kept "
        "(inputs and both answers; a uniform sample), per shadow and worker, in memory and "
        "in the request log's table shadow_samples.")
    shadow_windows: int = Field(
        default=10, ge=1, le=1000, description="Closed windows of the shadow comparison kept "
        "besides the current one and the cumulative figures.")
    log_level: str = Field(default="warning", description="Log level of the server.")
    # Set by the supervisor for its workers (--workers > 1); not for users.
    worker_index: int | None = Field(default=None, description="Internal: worker number.")
    peers_dir: Path | None = Field(default=None, description="Internal: workers' directory.")
    internal_token: SecretStr | None = Field(
        default=None, description="Internal: secret of calls between workers.")

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def onnx_threads(self) -> int:
        """``compiled_threads``, or the server's cores shared among its workers. One worker
        on two cores runs a large batch's graph on both (its event loop mostly waits on the
        graph then: 100-row requests at 32 clients, about 1.45x the rows/s of one thread);
        two workers get one thread each; one row takes the same time either way."""
        if self.compiled_threads is not None:
            return self.compiled_threads
        from ctcd.serving.compiled import cores

        return max(1, cores() // self.workers)
