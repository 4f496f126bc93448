"""The local backend runs streaming scorers like model servers: start, find, observe
(process + heartbeat), restart after a crash without loss, reload, stop, delete."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.streaming.scorers import churn_rows, outputs, wait_until
from typer.testing import CliRunner

from ctcd.cli import build
from ctcd.deployers.local import LocalDeployer
from ctcd.deployers.local.scorers import ScorerConfig
from ctcd.settings import Settings
from ctcd.streaming.client import send
from ctcd.streaming.localredis import LocalRedis

pytestmark = pytest.mark.e2e


def test_the_deployer_starts_finds_restarts_and_stops_scorers(
    tmp_path: Path, redis_server: LocalRedis, rclient: redis.Redis, stream: str,
    churn_model: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTCD_HOME", str(tmp_path / "home"))
    scorers = LocalDeployer(Settings(home=tmp_path / "home")).scorers
    config = ScorerConfig(name="churn-stream", model_uri=churn_model.uri, stream=stream,
                          redis_url=redis_server.url, replicas=2,
                          options={"batch_size": "100", "min_idle_ms": "2000"})
    try:
        info = scorers.deploy(config, timeout=240)
        assert info.state == "running"
        assert [r.consumer for r in info.replicas] == ["churn-stream-0", "churn-stream-1"]
        assert scorers.deploy(config, timeout=60).record.processes == info.record.processes

        ids = send(rclient, stream, churn_rows(1000))
        wait_until(lambda: len(outputs(rclient, stream)) >= 1000, 120, "predictions")
        assert {o["input_id"] for o in outputs(rclient, stream)} == set(ids)

        # A replica is SIGKILLed: observed as degraded, then started again as it was.
        pid = info.replicas[1].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: scorers.get("churn-stream").state == "degraded", 30, "degraded")
        more = send(rclient, stream, churn_rows(500, day=3))
        again = scorers.start("churn-stream", timeout=240)
        assert again.state == "running" and again.replicas[1].pid != pid
        wait_until(lambda: set(ids + more) <= {o["input_id"] for o in outputs(rclient, stream)},
                   120, "every request answered after the restart")

        listed = CliRunner().invoke(build(), ["streaming", "list"])
        assert "churn-stream" in listed.output and "running" in listed.output
        assert scorers.reload("churn-stream") == 2
        assert any("churn-stream-0" in line or "ready" in line
                   for line in scorers.logs("churn-stream", tail=20))

        scorers.stop("churn-stream", timeout=60)
        assert scorers.get("churn-stream").state == "stopped"
        assert scorers.find(running=True) == []
    finally:
        for found in scorers.find():
            scorers.delete(found.record.name, timeout=30, force=True)
    assert scorers.find() == []
