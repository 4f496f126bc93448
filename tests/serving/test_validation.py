"""Bad requests get a 4xx whose message names the field; the server keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.conftest import records

from ctcd.serving.rest import AppConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
async def churn(make_server: Any, client_for: Any, churn_model: Any) -> Any:
    server = make_server(churn_model.name, {churn_model.version: churn_model.uri})
    return client_for(server, AppConfig(max_body_bytes=64 * 1024))


def _row(churn_model: Any, **changes: Any) -> dict[str, Any]:
    row = records(churn_model.example.head(1))[0]
    for key, value in changes.items():
        if value is _DROP:
            del row[key]
        else:
            row[key] = value
    return row


_DROP = object()

# (case, body builder(row-maker) -> json body, expected status, words the message must hold)
CASES: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("missing column", lambda r: {"dataframe_records": [r(support_calls=_DROP)]}, 400,
     ("dataframe_records.support_calls[0]: ", "missing")),
    ("extra column", lambda r: {"dataframe_records": [r(surprise=1)]}, 400,
     ("surprise", "unexpected")),
    ("string in integer column", lambda r: {"dataframe_records": [r(age="old")]}, 400,
     ("age", "integer")),
    ("string in float column", lambda r: {"dataframe_records": [r(monthly_charges="$5")]},
     400, ("monthly_charges", "number")),
    ("number in string column", lambda r: {"dataframe_records": [r(region=3)]}, 400,
     ("region", "string")),
    ("null in required column", lambda r: {"dataframe_records": [r(monthly_charges=None)]},
     400, ("monthly_charges", "null")),
    ("fractional integer", lambda r: {"dataframe_records": [r(), r(age=40.5)]}, 400,
     ("dataframe_records.age[1]: expected an integer, got 40.5",)),
    ("fractional integer, split", lambda r: {"dataframe_split": {
        "columns": list(r()), "data": [list(r(age=29.5).values())]}}, 400,
     ("dataframe_split.age[0]: expected an integer, got 29.5",)),
    ("fractional integer, columnar", lambda r: {"inputs": {
        k: [v] for k, v in r(age=29.5).items()}}, 400,
     ("inputs.age[0]: expected an integer, got 29.5",)),
    ("boolean in number column", lambda r: {"dataframe_records": [r(age=True)]}, 400,
     ("age",)),
    ("no format field", lambda r: {"rows": [r()]}, 400, ("dataframe_split", "rows")),
    ("two format fields", lambda r: {"dataframe_records": [r()], "instances": [r()]}, 400,
     ("exactly one",)),
    ("unknown extra field", lambda r: {"dataframe_records": [r()], "extra": 1}, 400,
     ("extra",)),
    ("params not an object", lambda r: {"dataframe_records": [r()], "params": [1]}, 400,
     ("params",)),
    ("no rows", lambda r: {"dataframe_records": []}, 400, ("no rows",)),
    ("split row too short", lambda r: {"dataframe_split": {
        "columns": list(r()), "data": [list(r().values())[:-1]]}}, 400,
     ("dataframe_split.data[0]", "expected 11")),
    ("split without data", lambda r: {"dataframe_split": {"columns": list(r())}}, 400,
     ("dataframe_split", "data")),
    ("split bad key", lambda r: {"dataframe_split": {"data": [], "rows": 1}}, 400,
     ("dataframe_split.rows",)),
    ("columnar lengths differ", lambda r: {"inputs": {
        k: ([v, v] if k == "age" else [v]) for k, v in r().items()}}, 400,
     ("age", "values")),
    ("records not objects", lambda r: {"instances": [[1, 2, 3]]}, 400, ("instances",)),
    ("JSON list body", lambda r: [r()], 400, ("body", "object")),
    ("nested value", lambda r: {"dataframe_records": [r(age=[1, 2])]}, 400, ("age",)),
]


@pytest.mark.parametrize(("case", "build", "status", "words"), CASES, ids=[c[0] for c in CASES])
async def test_bad_json_names_the_field(churn: Any, churn_model: Any, case: str, build: Any,
                                        status: int, words: tuple[str, ...]) -> None:
    response = await churn.post("/invocations",
                                json=build(lambda **kw: _row(churn_model, **kw)))
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    good = await churn.post("/invocations", json={"dataframe_records": [_row(churn_model)]})
    assert good.status_code == 200  # the server keeps serving


@pytest.mark.parametrize(
    ("content", "content_type", "status", "words"),
    [
        (b"", "application/json", 400, ("body", "empty")),
        (b"{not json", "application/json", 400, ("body", "JSON")),
        (b"\xff\xfe", "text/csv", 400, ("body", "UTF-8")),
        (b"a,b\n1,2\n", "text/csv", 400, ("missing",)),
        (b"{}", "application/xml", 415, ("Content-Type",)),
        (b"{}", "application/json; charset=latin-1", 415, ("Content-Type",)),
    ],
)
async def test_bad_bodies(churn: Any, content: bytes, content_type: str, status: int,
                          words: tuple[str, ...]) -> None:
    response = await churn.post("/invocations", content=content,
                                headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["error"]


async def test_csv_wrong_type_names_column_and_row(churn: Any, churn_model: Any) -> None:
    frame = churn_model.example.head(3).copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[2, "age"] = "unknown"
    response = await churn.post("/invocations", content=frame.to_csv(index=False),
                                headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert "csv.age[2]" in response.json()["error"]


async def test_body_over_limit_is_413(churn: Any, churn_model: Any) -> None:
    rows = [_row(churn_model)] * 1000  # > 64 KiB
    response = await churn.post("/invocations", json={"dataframe_records": rows})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    async def chunks() -> Any:
        for chunk in (b'{"dataframe_records": [', b" " * 70_000, b"]}"):
            yield chunk

    chunked = await churn.post(
        "/invocations", content=chunks(),
        headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


async def test_unknown_route_and_method_are_json_4xx(churn: Any) -> None:
    missing = await churn.get("/nope")
    assert missing.status_code == 404
    assert "/nope" in missing.json()["error"]
    wrong = await churn.get("/invocations")
    assert wrong.status_code == 405


@pytest.mark.parametrize(("path", "allow"), [
    ("/admin/versions", "GET, HEAD, OPTIONS, POST"),
    ("/admin/versions/1", "DELETE, OPTIONS"),
    ("/invocations", "OPTIONS, POST"),
])
async def test_options_and_405_name_every_method_of_the_path(churn: Any, path: str,
                                                             allow: str) -> None:
    options = await churn.options(path)
    assert options.status_code == 204 and options.headers["allow"] == allow
    wrong = await churn.patch(path)
    assert wrong.status_code == 405
    assert sorted(wrong.headers["allow"].split(", ")) == allow.split(", ")


async def test_client_errors_are_not_version_errors(churn: Any, churn_model: Any) -> None:
    await churn.post("/invocations", json={"dataframe_records": [_row(churn_model, age="x")]})
    versions = (await churn.get("/admin/versions")).json()["versions"]
    assert versions[0]["requests"] == 1
    assert versions[0]["errors"] == 0
