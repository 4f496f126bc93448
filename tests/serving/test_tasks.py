"""The server for every task and natively served flavor, over its protocols: predict_proba
(V2 outputs and metadata) only for a classifier, with one column and label per class;
a regressor's floats answered in full; the MLflow route as MLflow answers. Answers are
compared with MLflow's own loader and the library's predict (tests/flavored_models.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.flavored_models import FlavoredFactory
from tests.serving.v2_inputs import v2_columns

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

KINDS = ["sklearn-regression", "sklearn-multiclass", "xgboost-multiclass",
         "xgboost-regression", "xgboost-booster", "lightgbm-binary", "lightgbm-regression"]
DATATYPES = {"sklearn-regression": "FP64", "sklearn-multiclass": "BYTES",
             "xgboost-multiclass": "INT64", "xgboost-regression": "FP32",
             "xgboost-booster": "FP32", "lightgbm-binary": "INT64",
             "lightgbm-regression": "FP64"}


@pytest.fixture
async def client(request: pytest.FixtureRequest, flavored_model: FlavoredFactory,
                 make_server: Any, client_for: Any) -> Any:
    model = flavored_model(request.param)
    server = make_server(model.name, {model.version: model.uri})
    return model, client_for(server)


@pytest.mark.parametrize("client", KINDS, indirect=True)
async def test_metadata_names_the_task_and_only_a_classifier_has_probabilities(
    client: Any,
) -> None:
    model, http = client
    meta = (await http.get(f"/v2/models/{model.name}")).json()
    assert meta["parameters"]["task"] == model.task
    assert meta["parameters"]["runtime"] == model.flavor  # none of these is compiled
    predict, *others = meta["outputs"]
    width = [3] if model.kind == "xgboost-booster" else []  # a Booster's probabilities
    assert predict == {"name": "predict", "datatype": DATATYPES[model.kind],
                       "shape": [-1, *width]}
    if model.task == "regression":
        assert others == []
    else:
        assert others == [{"name": "predict_proba", "datatype": "FP64",
                           "shape": [-1, len(model.classes)],
                           "parameters": {"classes": list(model.classes)}}]


@pytest.mark.parametrize("client", KINDS, indirect=True)
async def test_answers_are_mlflows_on_every_route(client: Any) -> None:
    model, http = client
    frame = model.frame
    expected = model.expected(frame)
    invocations = await http.post("/invocations", json={"dataframe_split": {
        "columns": list(frame.columns), "data": frame.astype(object).to_numpy().tolist()}})
    assert invocations.status_code == 200, invocations.text
    assert invocations.json()["predictions"] == expected.tolist()  # floats in full

    asked = [{"name": "predict"}] + ([] if model.task == "regression"
                                      else [{"name": "predict_proba"}])
    v2 = await http.post(f"/v2/models/{model.name}/infer",
                         json={"inputs": v2_columns(frame), "outputs": asked})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["predict"]["datatype"] == DATATYPES[model.kind]
    assert outputs["predict"]["shape"] == list(expected.shape)
    assert outputs["predict"]["data"] == expected.ravel().tolist()
    if model.task != "regression":
        proba = model.expected_proba(frame)
        assert outputs["predict_proba"]["shape"] == [len(frame), len(model.classes)]
        assert outputs["predict_proba"]["data"] == proba.astype("float64").ravel().tolist()


@pytest.mark.parametrize("client", ["sklearn-regression", "xgboost-regression",
                                    "lightgbm-regression"], indirect=True)
async def test_a_regressor_has_no_predict_proba(client: Any) -> None:
    model, http = client
    answer = await http.post(f"/v2/models/{model.name}/infer", json={
        "inputs": v2_columns(model.frame), "outputs": [{"name": "predict_proba"}]})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("outputs[0].name: 'predict_proba' is not an "
                                             "output of this model; it has ['predict']")


@pytest.mark.parametrize("client", ["xgboost-binary", "lightgbm-multiclass"], indirect=True)
async def test_requests_for_probabilities_and_labels_share_batches(client: Any) -> None:
    """Concurrent requests of a category model, some asking predict_proba, merge and each
    gets its own rows."""
    import asyncio

    model, http = client
    frame = model.frame
    parts = [frame.iloc[i:i + 4] for i in range(0, len(frame), 4)]

    async def one(part: Any, proba: bool) -> Any:
        body = {"inputs": v2_columns(part)}
        if proba:
            body["outputs"] = [{"name": "predict_proba"}]
        response = await http.post(f"/v2/models/{model.name}/infer", json=body)
        assert response.status_code == 200, response.text
        return np.asarray(response.json()["outputs"][0]["data"])

    got = await asyncio.gather(*(one(p, i % 2 == 1) for i, p in enumerate(parts)))
    for i, (part, answer) in enumerate(zip(parts, got, strict=True)):
        want = model.expected_proba(part).ravel() if i % 2 else model.expected(part)
        assert answer.tolist() == want.tolist()
