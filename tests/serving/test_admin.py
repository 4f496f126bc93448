"""The admin API: load, traffic split, unload; and the tokens of admin and predict routes."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.conftest import fake_loader

from ctcd.serving.rest import AppConfig

pytestmark = pytest.mark.anyio
ROW = {"dataframe_records": [{"a": 2, "b": "x"}]}


@pytest.fixture
def fake(make_server: Any) -> Any:
    return make_server("fake", {"1": "fake://v1"}, loader=fake_loader())


async def test_list_versions_shape(fake: Any, client_for: Any) -> None:
    client = client_for(fake)
    await client.post("/invocations", json=ROW)
    body = (await client.get("/admin/versions")).json()
    assert body["model_name"] == "fake"
    (entry,) = body["versions"]
    assert entry["version"] == "1"
    assert entry["model_uri"] == "fake://v1"
    assert entry["weight"] == 1.0
    assert entry["state"] == "ready"
    assert entry["requests"] == 1
    assert entry["errors"] == 0
    assert entry["latency_ms_p50"] > 0
    assert entry["latency_ms_p99"] >= entry["latency_ms_p50"]
    assert "T" in entry["loaded_at"]


async def test_add_version_then_again(fake: Any, client_for: Any) -> None:
    client = client_for(fake)
    added = await client.post("/admin/versions", json={"model_uri": "fake://v2",
                                                       "version": "2"})
    assert added.status_code == 201
    assert added.json()["weight"] == 0
    assert added.json()["version"] == "2"
    again = await client.post("/admin/versions", json={"model_uri": "fake://v2",
                                                       "version": "2"})
    assert again.status_code == 200
    other_uri = await client.post("/admin/versions", json={"model_uri": "fake://v3",
                                                           "version": "2"})
    assert other_uri.status_code == 409
    versions = (await client.get("/admin/versions")).json()["versions"]
    assert [(v["version"], v["weight"]) for v in versions] == [("1", 1.0), ("2", 0.0)]
    answered = await client.post("/invocations", json=ROW)
    assert answered.headers["x-model-version"] == "1"  # weight 0 gets no traffic


@pytest.mark.parametrize(("uri", "words"), [("missing://x", "no such model"),
                                            ("fake://broken", "warm-up")])
async def test_failed_load_is_422_and_changes_nothing(fake: Any, client_for: Any, uri: str,
                                                      words: str) -> None:
    client = client_for(fake)
    before = (await client.get("/admin/versions")).json()
    response = await client.post("/admin/versions", json={"model_uri": uri, "version": "9"})
    assert response.status_code == 422
    assert words in response.json()["error"]
    after = (await client.get("/admin/versions")).json()
    assert [v["version"] for v in after["versions"]] == [v["version"] for v in
                                                          before["versions"]]


async def test_load_a_real_mlflow_model_over_http(make_server: Any, client_for: Any,
                                                  churn_versions: Any) -> None:
    first, second = churn_versions
    client = client_for(make_server(first.name, {first.version: first.uri}))
    added = await client.post("/admin/versions", json={"model_uri": second.uri,
                                                       "version": second.version})
    assert added.status_code == 201, added.text
    bad = await client.post("/admin/versions", json={"model_uri": "models:/nope/1",
                                                     "version": "5"})
    assert bad.status_code == 422
    assert "models:/nope/1" in bad.json()["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [({"weights": {"1": 0.5, "2": 0.4}}, "sum to 1"),
     ({"weights": {"1": 1.5, "2": -0.5}}, "weights.2"),
     ({"weights": {"1": 0.5, "7": 0.5}}, "weights.7"),
     ({"weights": {"1": "half", "2": 0.5}}, "weights.1"),
     ({"weights": {"1": True}}, "weights.1"),
     ({"weights": {}}, "weights"),
     ({"weights": [1]}, "weights"),
     ({"split": {"1": 1}}, "weights")],
)
async def test_invalid_traffic_changes_nothing(fake: Any, client_for: Any, body: Any,
                                               words: str) -> None:
    client = client_for(fake)
    await client.post("/admin/versions", json={"model_uri": "fake://v2", "version": "2"})
    response = await client.put("/admin/traffic", json=body)
    assert 400 <= response.status_code < 500
    assert words in response.json()["error"]
    weights = {v["version"]: v["weight"] for v in
               (await client.get("/admin/versions")).json()["versions"]}
    assert weights == {"1": 1.0, "2": 0.0}


async def test_traffic_then_delete(fake: Any, client_for: Any) -> None:
    client = client_for(fake)
    await client.post("/admin/versions", json={"model_uri": "fake://v2", "version": "2"})
    split = await client.put("/admin/traffic", json={"weights": {"2": 1.0}})
    assert split.status_code == 200
    assert {v["version"]: v["weight"] for v in split.json()["versions"]} == {"1": 0.0,
                                                                              "2": 1.0}
    answered = await client.post("/invocations", json=ROW)
    assert answered.headers["x-model-version"] == "2"
    busy = await client.delete("/admin/versions/2")
    assert busy.status_code == 409
    assert (await client.delete("/admin/versions/3")).status_code == 404
    gone = await client.delete("/admin/versions/1")
    assert gone.status_code == 200
    assert [v["version"] for v in gone.json()["versions"]] == ["2"]


async def test_admin_token(fake: Any, client_for: Any) -> None:
    client = client_for(fake, AppConfig(admin_token="s3cret", loopback=False))
    missing = await client.get("/admin/versions")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await client.get("/admin/versions", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await client.get("/admin/versions", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    put = await client.put("/admin/traffic", json={"weights": {"1": 1}})
    assert put.status_code == 401
    assert (await client.post("/invocations", json=ROW)).status_code == 200  # predict open


async def test_admin_without_token_only_on_loopback(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader())
    exposed = client_for(server, AppConfig(admin_token=None, loopback=False))
    for method, path in (("GET", "/admin/versions"), ("PUT", "/admin/traffic"),
                         ("POST", "/admin/versions"), ("DELETE", "/admin/versions/1")):
        response = await exposed.request(method, path, json={})
        assert response.status_code == 403, (method, path)
    local = client_for(server, AppConfig(admin_token=None, loopback=True))
    assert (await local.get("/admin/versions")).status_code == 200


async def test_predict_token(fake: Any, client_for: Any) -> None:
    client = client_for(fake, AppConfig(token="tok"))
    assert (await client.post("/invocations", json=ROW)).status_code == 401
    v2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1]},
                     {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    assert (await client.post("/v2/models/fake/infer", json=v2)).status_code == 401
    auth = {"Authorization": "Bearer tok"}
    assert (await client.post("/invocations", json=ROW, headers=auth)).status_code == 200
    ok = await client.post("/v2/models/fake/infer", json=v2, headers=auth)
    assert ok.status_code == 200
    assert ok.json()["outputs"][0]["data"] == [10]
    # health and metrics stay open for probes and scrapers
    assert (await client.get("/ping")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
