"""Streaming scorer settings: command-line options, or environment variables
``CTCD_SCORER_*`` (e.g. ``CTCD_SCORER_REDIS_URL``; prefer the environment for a URL with a
password: command lines are visible to every user of the machine)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ScorerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CTCD_SCORER_", extra="ignore", cli_kebab_case=True,
        cli_prog_name="python -m ctcd.streaming", cli_implicit_flags=True,
    )

    model_uri: str = Field(description="Registered model to score with: models:/NAME@ALIAS "
                           "(follows the alias), models:/NAME/VERSION, NAME@ALIAS or NAME.")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis to read from.")
    stream: str = Field(description="Stream of requests (entries with a JSON `data` field).")
    group: str = Field(default="ctcd-scorers", description="Consumer group the scorers share.")
    consumer: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This scorer's name in the group; keep it across restarts so a restarted "
        "scorer finishes its own pending entries first.")
    output_stream: str | None = Field(
        default=None, description="Stream predictions go to (default `<stream>:predictions`).")
    dead_letter_stream: str | None = Field(
        default=None, description="Stream refused requests go to, with the reason (default "
        "`<stream>:dead`).")
    batch_size: int = Field(default=256, ge=1, le=100_000,
                            description="Most requests scored in one predict call (COUNT).")
    block_ms: int = Field(default=1000, ge=1, le=60_000,
                          description="How long one read waits for requests (BLOCK).")
    min_idle_ms: int = Field(
        default=60_000, ge=100, description="Claim another consumer's pending requests once "
        "they have waited this long unacknowledged (its scorer died or hangs). Keep it well "
        "above the time one batch takes, or slow batches are scored twice.")
    max_deliveries: int = Field(
        default=5, ge=1, description="A request delivered more often than this without "
        "being acknowledged is dead-lettered instead of scored again.")
    reload_interval: float = Field(
        default=30.0, ge=0, description="Seconds between checks of the model's alias; a new "
        "version is loaded in the background and swapped in between batches. 0: check only "
        "on SIGHUP.")
    dataset: str | None = Field(
        default=None, description="Data set spec (name or path) whose ranges and categories "
        "requests must also respect; default: the model signature only.")
    threads: int = Field(
        default=1, ge=1, description="Native (OpenMP/BLAS) threads per predict. Batches are "
        "small: one thread avoids thread start-up and spin-waiting against other processes; "
        "add replicas to use more cores.")
    output_maxlen: int | None = Field(
        default=None, ge=1, description="Trim the output streams to about this many entries.")
    heartbeat_ttl: float = Field(
        default=15.0, ge=1, description="Seconds the scorer's heartbeat key lives unrenewed.")
    start_id: str = Field(
        default="0", description="Where a consumer group created by this scorer starts: "
        "`0` (every entry already in the stream) or `$` (only new ones).")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: MLFLOW_TRACKING_URI.")
    health_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve `GET /healthz` (the loop turned "
        "within `stall_seconds`), `GET /readyz` (the model is loaded and the stream is read) "
        "and `POST /reload` (check the model alias now, as SIGHUP does) on this port; the "
        "Kubernetes backend's probes and reload use it. Default: no HTTP.")
    health_host: str = Field(default="127.0.0.1", description="Address of the health port.")
    reload_token: str | None = Field(
        default=None, description="Bearer token `POST /reload` requires (set it as "
        "CTCD_SCORER_RELOAD_TOKEN, not on the command line); the Kubernetes backend generates "
        "one per scorer and keeps it in the scorer's Secret. Default: none, for a health port "
        "on loopback.")
    stall_seconds: float = Field(
        default=300.0, ge=1, description="`/healthz` fails when the loop has not turned for "
        "this long (a hung predict or Redis call), so Kubernetes restarts the scorer; its "
        "entries are then claimed by the others.")
    log_level: str = Field(default="info", description="Log level.")

    @property
    def outputs(self) -> str:
        return self.output_stream or f"{self.stream}:predictions"

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_stream or f"{self.stream}:dead"


def heartbeat_key(stream: str, group: str, consumer: str) -> str:
    """Where a scorer says it is alive: a JSON status that expires unless renewed."""
    return f"ctcd:scorer:{stream}:{group}:{consumer}"
