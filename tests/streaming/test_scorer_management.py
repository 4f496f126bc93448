"""The local backend runs streaming scorers through the deployer contract
(:class:`ctcd.deployers.SupportsScorers`), like model servers: start, find, observe
(process + heartbeat), restart after a crash without loss, a new champion while requests
flow, stop, delete."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import mlflow
import pytest
import redis
from tests.streaming.scorers import (
    change_champion_while_sending,
    churn_rows,
    outputs,
    wait_until,
)
from typer.testing import CliRunner

from ctcd.cli import build
from ctcd.deployers import ScorerConfig, SupportsScorers, get_deployer, scorers_of
from ctcd.pipelines.continuous_training import promote
from ctcd.settings import Settings
from ctcd.streaming.client import send
from ctcd.streaming.localredis import LocalRedis
from ctcd.tracking import get_tracking

pytestmark = pytest.mark.e2e


@pytest.fixture
def local_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CTCD_HOME", str(tmp_path / "home"))
    scorers = scorers_of(get_deployer("local", settings=Settings(home=tmp_path / "home")))
    yield scorers
    for found in scorers.find_scorers():
        scorers.delete_scorer(found.name, timeout=30, force=True)
    assert scorers.find_scorers() == []


def test_the_deployer_starts_finds_restarts_and_stops_scorers(
    redis_server: LocalRedis, rclient: redis.Redis, stream: str, churn_model: Any,
    local_scorers: SupportsScorers,
) -> None:
    scorers = local_scorers
    config = ScorerConfig(name="churn-stream", model_uri=churn_model.uri, stream=stream,
                          redis_url=redis_server.url, replicas=2,
                          options={"batch_size": "100", "min_idle_ms": "2000"})
    info = scorers.deploy_scorer(config, timeout=240)
    assert info.state == "running" and info.backend == "local"
    assert [r.consumer for r in info.replicas] == ["churn-stream-0", "churn-stream-1"]
    assert info.model_versions == [churn_model.version]
    pids = [r.details["pid"] for r in info.replicas]
    unchanged = scorers.deploy_scorer(config, timeout=60)
    assert [r.details["pid"] for r in unchanged.replicas] == pids

    ids = send(rclient, stream, churn_rows(1000))
    wait_until(lambda: len(outputs(rclient, stream)) >= 1000, 120, "predictions")
    assert {o["input_id"] for o in outputs(rclient, stream)} == set(ids)

    # A replica is SIGKILLed: observed as degraded, then started again as it was.
    pid = pids[1]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: scorers.describe_scorer("churn-stream").state == "degraded", 30,
               "degraded")
    more = send(rclient, stream, churn_rows(500, day=3))
    again = scorers.start_scorer("churn-stream", timeout=240)
    assert again.state == "running" and again.replicas[1].details["pid"] != pid
    wait_until(lambda: set(ids + more) <= {o["input_id"] for o in outputs(rclient, stream)},
               120, "every request answered after the restart")

    listed = CliRunner().invoke(build(), ["streaming", "list", "--deployer", "local"])
    assert "churn-stream" in listed.output and "running" in listed.output
    assert scorers.reload_scorer("churn-stream") == 2
    lines = list(scorers.get_scorer_logs("churn-stream", tail=20))
    assert any(line.startswith("[churn-stream-1] ") for line in lines)
    assert any("ready" in line for line in scorers.get_scorer_logs("churn-stream",
                                                                    replica=0))

    scorers.stop_scorer("churn-stream", timeout=60)
    assert scorers.describe_scorer("churn-stream").state == "stopped"
    assert scorers.find_scorers(running=True) == []
    # A clean stop holds nothing, so its consumers left the group.
    assert rclient.xinfo_consumers(stream, "ctcd-scorers") == []


def test_a_new_champion_reaches_running_scorers_without_losing_requests(
    redis_server: LocalRedis, rclient: redis.Redis, stream: str, model_factory: Any,
    local_scorers: SupportsScorers,
) -> None:
    old = model_factory(name="churn-local-champion", kind="logistic_regression")
    new = model_factory(name="churn-local-champion", kind="random_forest")
    mlflow.MlflowClient().set_registered_model_alias(old.name, "champion", old.version)
    config = ScorerConfig(name="champion-stream", model_uri=f"models:/{old.name}@champion",
                          stream=stream, redis_url=redis_server.url, replicas=2,
                          options={"batch_size": "32", "reload_interval": "0"})
    local_scorers.deploy_scorer(config, timeout=240)
    told: list[dict[str, Any]] = []

    def promote_new() -> None:
        # What continuous_training's promote task runs: the alias moves, and the scorers
        # following it (reload_interval 0: they never look by themselves) are told.
        told.append(promote({"model_name": new.name, "version": new.version},
                            get_tracking()))

    figures = change_champion_while_sending(local_scorers, "champion-stream", rclient, stream,
                                            model_name=old.name, old=old, new=new,
                                            change=promote_new)
    assert told == [{"model_name": new.name, "champion": new.version, "scorers_told": 2}]
    assert figures["consumers"] == ["champion-stream-0", "champion-stream-1"]
