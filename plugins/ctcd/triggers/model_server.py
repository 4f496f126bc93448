"""Wait, in the triggerer, until a model server answers ready for its model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from airflow.triggers.base import BaseTrigger, TriggerEvent

from ctcd.services.handle import ServiceStatus


class ModelServerReadyTrigger(BaseTrigger):
    """Fires ``{"status": "ready"}`` once ``endpoint`` serves ``model_name``, or
    ``{"status": "timeout", "last_status": ...}`` when the wall-clock ``deadline`` (epoch
    seconds, so a triggerer restart does not extend it) passes first. ``payload`` (plain
    JSON) is echoed in the event, so the resumed task gets back what it deferred with."""

    def __init__(
        self,
        endpoint: str,
        model_name: str,
        deadline: float,
        poll_interval: float = 1.0,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.model_name = model_name
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.payload = payload or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "endpoint": self.endpoint,
                "model_name": self.model_name,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "payload": self.payload,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        status = ServiceStatus.UNREACHABLE
        async with httpx.AsyncClient(base_url=self.endpoint, timeout=2.0) as client:
            while True:
                status = await aprobe(client, self.model_name)
                if status is ServiceStatus.RUNNING:
                    yield TriggerEvent(
                        {"status": "ready", "endpoint": self.endpoint, **self.payload}
                    )
                    return
                if time.time() >= self.deadline:
                    yield TriggerEvent({
                        "status": "timeout", "endpoint": self.endpoint,
                        "last_status": status.value, **self.payload,
                    })
                    return
                await asyncio.sleep(self.poll_interval)


async def aprobe(client: httpx.AsyncClient, model_name: str) -> ServiceStatus:
    """Async twin of :func:`ctcd.services.probe` (same routes, same meaning)."""
    try:
        ready = await client.get("/v2/health/ready")
        if ready.status_code != 200:
            return ServiceStatus.UNHEALTHY
        model = await client.get(f"/v2/models/{quote(model_name, safe='')}")
    except httpx.TransportError:
        return ServiceStatus.UNREACHABLE
    return ServiceStatus.RUNNING if model.status_code == 200 else ServiceStatus.UNHEALTHY
