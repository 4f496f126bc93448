"""A shadow version in the server (in process, the fake model): copies of live requests
scored beside them, compared, never answered; the live answers unchanged whatever the
shadow does (raises, hangs, disagrees); its admin API."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.serving.conftest import HANG, fake_loader

from ctcd.serving.handlers import ModelServer
from ctcd.serving.reqlog import RequestLog
from ctcd.serving.shadow import ShadowLimits

pytestmark = pytest.mark.anyio


def _body(a: int, rows: int = 1) -> dict[str, Any]:
    return {"dataframe_records": [{"a": a + i, "b": "x"} for i in range(rows)]}


@pytest.fixture
def hang_released() -> Iterator[None]:
    HANG.clear()
    yield
    HANG.set()  # let the hung predict thread end


_MADE: list[ModelServer] = []


@pytest.fixture(autouse=True)
def _closed() -> Iterator[None]:
    yield
    while _MADE:
        _MADE.pop().close()


def _server(shadow_uri: str, *, sink: Any = None, limits: ShadowLimits | None = None,
            proba: bool = False) -> ModelServer:
    server = ModelServer("fake", loader=fake_loader(proba=proba), sink=sink,
                         shadow_limits=limits)
    server.install("1", server.load_blocking("fake://live"), weight=1.0)
    server.install("2", server.load_blocking(shadow_uri))
    _MADE.append(server)
    return server


async def _shadow(client: Any, **plan: Any) -> dict[str, Any]:
    answer = await client.put("/admin/shadow", json={"version": "2", "mirror_percent": 100,
                                                      **plan})
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["shadow"])


async def _state(client: Any, until: Any = None, samples: int = 20) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        state = (await client.get(f"/admin/shadow?samples={samples}")).json()["shadow"]
        if until is None or until(state["cumulative"]) or time.monotonic() > deadline:
            return dict(state)
        await asyncio.sleep(0.02)


async def _traffic(client: Any, n: int, rows: int = 1) -> list[Any]:
    answers = await asyncio.gather(*(client.post("/invocations", json=_body(i, rows),
                                                 headers={"X-Request-ID": f"req-{i}"})
                                     for i in range(n)))
    assert [a.status_code for a in answers] == [200] * n, answers[0].text
    assert {a.headers["x-model-version"] for a in answers} == {"1"}
    for i, answer in enumerate(answers):  # the live answer, untouched
        assert answer.json()["predictions"] == [(i + r) * 10 for r in range(rows)]
    return answers


async def test_an_equal_shadow_agrees_on_every_request(client_for: Any, tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite", sample_rate=1.0, flush_seconds=0.01)
    server = _server("fake://equal", sink=log)
    client = client_for(server)
    plan = await _shadow(client)
    assert plan["cumulative"]["mirrored"] == 0 and plan["live_versions"] == []
    await _traffic(client, 40, rows=3)
    state = await _state(client, lambda c: c["answered"] == 40)
    total = state["cumulative"]
    assert (total["mirrored"], total["answered"], total["dropped"], total["errors"]) == (
        40, 40, 0, 0)
    assert total["labels"] == {"rows": 120, "agreed": 120, "agreement": 1.0}
    assert total["error_rate"] == 0.0 and total["disagreeing_requests"] == 0
    assert total["latency_ms"]["live"]["p50"] > 0 and total["latency_ms"]["shadow"]["p99"] > 0
    assert [w["mirrored"] for w in state["windows"]][-1] >= 1
    assert sum(w["answered"] for w in state["windows"]) == 40
    assert state["live_versions"] == ["1"] and state["samples"] == []
    versions = {v["version"]: v for v in (await client.get("/admin/versions")).json()[
        "versions"]}
    assert versions["2"]["requests"] == 0  # no client was answered by the shadow
    metrics = (await client.get("/metrics")).text
    assert 'ctcd_shadow_requests_total{model="fake",outcome="answered",version="2"} 40.0' in (
        metrics)
    assert 'ctcd_shadow_mirror_ratio{model="fake",version="2"} 1.0' in metrics
    log.close()


async def test_a_disagreeing_shadow_is_sampled_with_the_correlation_id(
        client_for: Any, tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite", sample_rate=1.0, flush_seconds=0.01)
    server = _server("fake://other?scale=11", sink=log,
                     limits=ShadowLimits(samples=5))
    client = client_for(server)
    await _shadow(client)
    await _traffic(client, 30)
    state = await _state(client, lambda c: c["answered"] == 30)
    total = state["cumulative"]
    assert total["labels"]["agreement"] == pytest.approx(1 / 30)  # a = 0: 0 * 11 == 0 * 10
    assert total["disagreeing_requests"] == 29
    assert len(state["samples"]) == 5  # a bounded sample
    sample = state["samples"][0]
    i = int(sample["request_id"].removeprefix("req-"))
    assert sample["kind"] == "disagreement" and sample["inputs"] == {"a": [i], "b": ["x"]}
    assert (sample["live"], sample["shadow"]) == ([i * 10], [i * 11])
    log.close()
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        kept = db.execute("SELECT request_id, kind, live_outputs, shadow_outputs FROM "
                          "shadow_samples ORDER BY slot").fetchall()
        logged = {r for (r,) in db.execute("SELECT request_id FROM requests")}
    assert len(kept) == 5 and all(k[1] == "disagreement" for k in kept)
    assert {k[0] for k in kept} == {s["request_id"] for s in state["samples"]}
    assert {k[0] for k in kept} <= logged  # the same id on the live request's row


async def test_probabilities_are_compared_as_numbers(client_for: Any) -> None:
    client = client_for(_server("fake://near?scale=11", proba=True))
    await _shadow(client, tolerance=0.0015)
    v2 = {"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 20]},
                     {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]}],
          "outputs": [{"name": "predict_proba"}]}
    assert (await client.post("/v2/models/fake/infer", json=v2)).status_code == 200
    numbers = (await _state(client, lambda c: c["answered"] == 1))["cumulative"]["numbers"]
    # a = 1: |0.0011 - 0.0010| = 1e-4; a = 20: 0.002 apart
    assert (numbers["rows"], numbers["within_tolerance"]) == (2, 1)
    assert numbers["abs_difference"]["max"] == pytest.approx(0.002)
    assert numbers["abs_difference"]["p50"] == pytest.approx(1e-4, rel=0.15)


async def test_a_raising_shadow_is_counted_never_answered(client_for: Any) -> None:
    client = client_for(_server("fake://raise"))
    await _shadow(client)
    await _traffic(client, 25)
    state = await _state(client, lambda c: c["errors"] == 25)
    total = state["cumulative"]
    assert (total["errors"], total["answered"], total["error_rate"]) == (25, 0, 1.0)
    assert state["samples"][0]["kind"] == "error"
    assert "raises on every call" in state["samples"][0]["error"]


async def test_a_hanging_shadow_times_out_and_what_waits_behind_it_too(
        client_for: Any, hang_released: None) -> None:
    client = client_for(_server("fake://hang", limits=ShadowLimits(max_queue=5)))
    await _shadow(client, timeout_ms=50)
    await _traffic(client, 1)
    await _state(client, lambda c: c["timeouts"] == 1)
    started = time.monotonic()
    await _traffic(client, 30)
    assert time.monotonic() - started < 5  # nothing waits for the shadow
    # each copy ends as a timeout (it waited behind the hung call) or a drop (queue full)
    total = (await _state(client, lambda c: c["timeouts"] + c["dropped"] == 31))["cumulative"]
    assert total["timeouts"] + total["dropped"] == 31 and total["answered"] == 0
    assert total["timeouts"] == total["mirrored"] >= 6  # the first, and a full queue
    assert total["error_rate"] == 1.0
    ended = (await client.delete("/admin/shadow")).json()["shadow"]
    assert ended["cumulative"]["dropped"] == total["dropped"]
    assert (await client.get("/admin/shadow")).json()["shadow"] is None
    await _traffic(client, 3)  # still serving


async def test_a_share_of_requests_is_mirrored(client_for: Any) -> None:
    client = client_for(_server("fake://equal"))
    await _shadow(client, mirror_percent=10)
    await _traffic(client, 400)
    total = (await _state(client))["cumulative"]
    assert 15 <= total["mirrored"] <= 70, total["mirrored"]  # ~40; p < 1e-6 outside


async def test_traffic_to_the_shadow_or_unloading_it_ends_it(client_for: Any) -> None:
    client = client_for(_server("fake://equal"))
    await _shadow(client)
    moved = await client.put("/admin/traffic", json={"weights": {"2": 1}})
    assert moved.status_code == 200
    assert (await client.get("/admin/shadow")).json()["shadow"] is None
    await client.put("/admin/traffic", json={"weights": {"1": 1}})
    await _shadow(client)
    assert (await client.delete("/admin/versions/2")).status_code == 200
    assert (await client.get("/admin/shadow")).json()["shadow"] is None


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"version": "9", "mirror_percent": 10}, 400, "version: version '9' is not loaded"),
    ({"version": "1", "mirror_percent": 10}, 409, "has traffic weight 1.0"),
    ({"version": "2"}, 400, "mirror_percent: is required"),
    ({"version": "2", "mirror_percent": 0}, 400, "mirror_percent: must be a number above 0"),
    ({"version": "2", "mirror_percent": 101}, 400, "mirror_percent"),
    ({"version": "2", "mirror_percent": True}, 400, "mirror_percent"),
    ({"version": "2", "mirror_percent": 5, "timeout_ms": -1}, 400, "timeout_ms"),
    ({"version": "2", "mirror_percent": 5, "tolerance": -0.1}, 400, "tolerance: must be"),
    ({"version": "2", "mirror_percent": 5, "speed": 1}, 400, "speed: is not a field"),
    ({"version": "", "mirror_percent": 5}, 400, "version: must be"),
])
async def test_bad_shadow_requests_name_the_field(client_for: Any, body: dict[str, Any],
                                                  status: int, words: str) -> None:
    client = client_for(_server("fake://equal"))
    answer = await client.put("/admin/shadow", json=body)
    assert answer.status_code == status and words in answer.json()["error"], answer.text


async def test_one_shadow_at_a_time_and_asking_again_is_safe(client_for: Any) -> None:
    server = _server("fake://equal")
    server.install("3", server.load_blocking("fake://third"))
    client = client_for(server)
    first = await _shadow(client, mirror_percent=50)
    again = await _shadow(client, mirror_percent=50)
    assert again["started_at"] == first["started_at"]
    other = await client.put("/admin/shadow", json={"version": "3", "mirror_percent": 5})
    assert other.status_code == 409 and "DELETE /admin/shadow" in other.json()["error"]
    samples = await client.get("/admin/shadow?samples=x")
    assert samples.status_code == 400 and "samples" in samples.json()["error"]
