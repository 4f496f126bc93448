"""Fixtures of the streaming tests: one real ``redis-server`` on a free loopback port for
the session (a stream of its own per test), and registered churn models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ctcd.streaming import localredis


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[localredis.LocalRedis]:
    server = localredis.start(session_dir / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rclient(redis_server: localredis.LocalRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def stream() -> str:
    return f"requests-{uuid.uuid4().hex[:8]}"
