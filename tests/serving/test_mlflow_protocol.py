"""MLflow scoring protocol: every input format answers exactly what pyfunc predict does."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pytest
from tests.serving.conftest import records

pytestmark = pytest.mark.anyio


@pytest.fixture
async def churn(make_server: Any, client_for: Any, churn_model: Any) -> Any:
    server = make_server(churn_model.name, {churn_model.version: churn_model.uri})
    return client_for(server)


@pytest.fixture(scope="module")
def expected(churn_model: Any) -> list[Any]:
    """What MLflow's own pyfunc predict says for the example frame."""
    return mlflow.pyfunc.load_model(churn_model.uri).predict(churn_model.example).tolist()


def _bodies(example: Any) -> dict[str, Any]:
    rows = records(example)
    columns = list(example.columns)
    return {
        "dataframe_split": {"dataframe_split": {
            "columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
        "dataframe_split_with_index": {"dataframe_split": {
            "columns": columns, "index": list(range(len(rows))),
            "data": [[r[c] for c in columns] for r in rows]}},
        "dataframe_records": {"dataframe_records": rows},
        "instances_records": {"instances": rows},
        "inputs_columnar": {"inputs": {c: [r[c] for r in rows] for c in columns}},
        "instances_columnar_with_params": {"instances": {c: [r[c] for r in rows]
                                                         for c in columns}, "params": {}},
    }


FORMS = ("dataframe_split", "dataframe_split_with_index", "dataframe_records",
         "instances_records", "inputs_columnar", "instances_columnar_with_params")


@pytest.mark.parametrize("form", FORMS)
async def test_json_formats_match_pyfunc(churn: Any, churn_model: Any, expected: list[Any],
                                         form: str) -> None:
    response = await churn.post("/invocations", json=_bodies(churn_model.example)[form])
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert response.headers["x-model-name"] == churn_model.name
    assert response.headers["x-model-version"] == churn_model.version


async def test_csv_matches_pyfunc(churn: Any, churn_model: Any, expected: list[Any]) -> None:
    csv = churn_model.example.to_csv(index=False)
    response = await churn.post("/invocations", content=csv,
                                headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert response.headers["x-model-version"] == churn_model.version


async def test_numeric_model_matches_pyfunc(make_server: Any, client_for: Any,
                                            numeric_model: Any) -> None:
    client = client_for(make_server("numeric", {"7": numeric_model.uri}))
    frame = numeric_model.example
    response = await client.post("/invocations", json={"dataframe_split": {
        "columns": list(frame.columns), "data": frame.to_numpy().tolist()}})
    assert response.status_code == 200, response.text
    want = mlflow.pyfunc.load_model(numeric_model.uri).predict(frame)
    assert np.array_equal(np.asarray(response.json()["predictions"]), want)
    assert response.headers["x-model-version"] == "7"


async def test_health_routes(churn: Any) -> None:
    for path in ("/ping", "/health"):
        response = await churn.get(path)
        assert response.status_code == 200
    version = await churn.get("/version")
    assert version.status_code == 200
    assert version.text == mlflow.__version__


async def test_single_row_and_many_rows(churn: Any, churn_model: Any,
                                        expected: list[Any]) -> None:
    rows = records(churn_model.example)
    one = await churn.post("/invocations", json={"dataframe_records": rows[:1]})
    assert one.json() == {"predictions": expected[:1]}
    many = await churn.post("/invocations", json={"dataframe_records": rows * 20})
    assert many.json() == {"predictions": expected * 20}


async def test_numeric_fast_path_still_names_the_bad_cell(make_server: Any, client_for: Any,
                                                          numeric_model: Any) -> None:
    client = client_for(make_server("numeric", {"1": numeric_model.uri}))
    frame = numeric_model.example.head(3)
    data = frame.to_numpy().tolist()
    data[2][3] = None
    response = await client.post("/invocations", json={"dataframe_split": {
        "columns": list(frame.columns), "data": data}})
    assert response.status_code == 400
    assert "dataframe_split.f3[2]" in response.json()["error"]
    shuffled = list(reversed(frame.columns))
    reordered = await client.post("/invocations", json={"dataframe_split": {
        "columns": shuffled, "data": frame[shuffled].to_numpy().tolist()}})
    want = mlflow.pyfunc.load_model(numeric_model.uri).predict(frame)
    assert np.array_equal(reordered.json()["predictions"], want)
