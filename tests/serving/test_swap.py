"""Blue/green and canary on a live server: concurrent requests never fail."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import mlflow
import pytest
from tests.serving.conftest import records

pytestmark = pytest.mark.anyio


async def test_swap_and_canary_under_load(make_server: Any, client_for: Any,
                                          churn_versions: Any) -> None:
    first, second = churn_versions
    server = make_server(first.name, {first.version: first.uri})
    client = client_for(server)
    rows = records(first.example)
    want = {v.version: mlflow.pyfunc.load_model(v.uri).predict(first.example).tolist()
            for v in churn_versions}
    assert want[first.version] != want[second.version]  # answers tell versions apart

    statuses: collections.Counter[int] = collections.Counter()
    answered: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    stop = asyncio.Event()

    async def user(offset: int) -> None:
        while not stop.is_set():
            i = offset % len(rows)
            offset += 1
            response = await client.post("/invocations", json={"dataframe_records": [rows[i]]})
            statuses[response.status_code] += 1
            if response.status_code == 200:
                version = response.headers["x-model-version"]
                answered[version] += 1
                if response.json()["predictions"] != want[version][i:i + 1]:
                    wrong.append(version)

    async def admin() -> None:
        async def until(count: int) -> None:
            while sum(statuses.values()) < count:
                await asyncio.sleep(0.01)

        await until(20)
        added = await client.post("/admin/versions", json={"model_uri": second.uri,
                                                           "version": second.version})
        assert added.status_code == 201, added.text
        await until(sum(statuses.values()) + 20)
        canary = {first.version: 0.7, second.version: 0.3}
        assert (await client.put("/admin/traffic", json={"weights": canary})).status_code == 200
        await until(sum(statuses.values()) + 60)
        swap = {second.version: 1.0}
        assert (await client.put("/admin/traffic", json={"weights": swap})).status_code == 200
        seen_before_delete = sum(statuses.values())
        assert (await client.delete(f"/admin/versions/{first.version}")).status_code == 200
        await until(seen_before_delete + 20)
        back = await client.post("/admin/versions", json={"model_uri": first.uri,
                                                          "version": first.version})
        assert back.status_code == 201  # roll back: load the old one again, switch at once
        assert (await client.put("/admin/traffic",
                                 json={"weights": {first.version: 1}})).status_code == 200
        await until(sum(statuses.values()) + 20)
        stop.set()

    await asyncio.wait_for(asyncio.gather(admin(), *(user(k * 3) for k in range(8))), 240)
    assert set(statuses) == {200}, statuses
    assert not wrong
    assert answered[first.version] > 0
    assert answered[second.version] > 0
    counts = {v["version"]: v for v in (await client.get("/admin/versions")).json()["versions"]}
    assert counts[first.version]["weight"] == 1.0
    assert counts[second.version]["requests"] == answered[second.version]
    assert all(v["errors"] == 0 for v in counts.values())


async def test_canary_split_follows_weights(make_server: Any, client_for: Any) -> None:
    from tests.serving.conftest import fake_loader

    server = make_server("fake", {"1": "fake://v1", "2": "fake://v2"}, loader=fake_loader())
    client = client_for(server)
    await client.put("/admin/traffic", json={"weights": {"1": 0.8, "2": 0.2}})
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(400):
        response = await client.post("/invocations",
                                     json={"dataframe_records": [{"a": 1, "b": "x"}]})
        seen[response.headers["x-model-version"]] += 1
    assert 40 <= seen["2"] <= 130, seen  # 80 expected; far outside means a broken split
