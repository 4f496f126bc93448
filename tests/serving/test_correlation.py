"""Correlation ids: the client's ``X-Request-ID`` (or one the server makes) on the answer,
in the request log, and on the server log line of an unexpected error, which the client
sees only as a generic message naming that id."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.serving.conftest import fake_loader

from ctcd.serving import correlation
from ctcd.serving.reqlog import RequestLog
from ctcd.serving.rest import create_app

pytestmark = pytest.mark.anyio
V2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [4]},
                 {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}


def _records(b: str) -> dict[str, Any]:
    return {"dataframe_records": [{"a": 1, "b": b}]}


async def test_the_clients_id_is_returned_and_logged(make_server: Any, client_for: Any,
                                                      tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite", sample_rate=1.0, flush_seconds=0.01)
    client = client_for(make_server("fake", {"1": "fake://1"}, loader=fake_loader(), sink=log))
    mlflow = await client.post("/invocations", json=_records("x"),
                               headers={"X-Request-ID": "order-42"})
    v2 = await client.post("/v2/models/fake/infer", json=V2,
                           headers={"X-Request-ID": "order-43"})
    assert mlflow.headers["x-request-id"] == "order-42"
    assert v2.headers["x-request-id"] == "order-43"
    assert v2.json()["id"] == "order-43"  # a V2 body without an id answers with this one
    log.close()
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute("SELECT protocol, request_id FROM requests ORDER BY rowid").fetchall()
    assert rows == [("mlflow", "order-42"), ("v2", "order-43")]


async def test_an_id_is_made_when_none_is_sent(make_server: Any, client_for: Any) -> None:
    client = client_for(make_server("fake", {"1": "fake://1"}, loader=fake_loader()))
    first, second = [(await client.post("/invocations", json=_records("x"))).headers[
        "x-request-id"] for _ in range(2)]
    assert first and second and first != second
    with_body_id = await client.post("/v2/models/fake/infer", json={**V2, "id": "mine"})
    assert with_body_id.json()["id"] == "mine"
    assert with_body_id.headers["x-request-id"] != "mine"  # the header's, not the body's


@pytest.mark.parametrize("bad", ["x" * 129, "tab\there", "caf\u00e9"])
async def test_a_malformed_id_is_a_400_under_a_new_one(make_server: Any, client_for: Any,
                                                       bad: str) -> None:
    client = client_for(make_server("fake", {"1": "fake://1"}, loader=fake_loader()))
    answer = await client.post("/invocations", json=_records("x"),
                               headers={"X-Request-ID": bad.encode("latin-1")})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("X-Request-ID: must be at most 128 printable ASCII")
    assert answer.headers["x-request-id"] not in ("", bad)


async def test_client_errors_carry_the_id_too(make_server: Any, client_for: Any) -> None:
    client = client_for(make_server("fake", {"1": "fake://1"}, loader=fake_loader()))
    refused = await client.post("/invocations", json=_records("refuse"),
                                headers={"X-Request-ID": "r-1"})
    bad = await client.post("/invocations", content=b"{", headers={"X-Request-ID": "r-2"})
    assert (refused.status_code, refused.headers["x-request-id"]) == (422, "r-1")
    assert (bad.status_code, bad.headers["x-request-id"]) == (400, "r-2")


async def test_an_unexpected_error_is_generic_and_logged_under_the_id(
        make_server: Any, client_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = client_for(make_server("fake", {"1": "fake://1"}, loader=fake_loader()))
    with caplog.at_level(logging.ERROR):
        answer = await client.post("/invocations", json=_records("crash"),
                                   headers={"X-Request-ID": "boom-1"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "boom-1"
    assert answer.json() == {"error": "internal error; the model server's log has the detail "
                                      "under request id boom-1"}
    assert "crashed" not in answer.text and "RuntimeError" not in answer.text
    [record] = [r for r in caplog.records if "boom-1" in r.getMessage()]
    assert record.exc_info is not None and "the model crashed" in str(record.exc_info[1])


async def test_an_unexpected_error_off_the_prediction_path_too(
        make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server("fake", {"1": "fake://1"}, loader=fake_loader())

    def broken(*args: Any) -> Any:
        raise KeyError("secret internal detail")

    server.model_metadata = broken
    # Starlette answers, then re-raises to the ASGI server (which logs it too)
    transport = httpx.ASGITransport(app=create_app(server), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        with caplog.at_level(logging.ERROR):
            answer = await client.get("/v2/models/fake", headers={"X-Request-ID": "meta-1"})
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "meta-1"
    assert "meta-1" in answer.json()["error"] and "secret" not in answer.text
    [record] = [r for r in caplog.records if "meta-1" in r.getMessage()]
    assert "secret internal detail" in str(record.exc_info[1] if record.exc_info else "")


def test_made_ids_are_unique_and_a_good_one_is_kept() -> None:
    made = {correlation.new_id() for _ in range(1000)}
    assert len(made) == 1000
    assert correlation.accept("abc-123") == "abc-123"
    assert correlation.accept(None) != correlation.accept("")
