"""KServe V2 / Open Inference Protocol routes."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pytest
from tests.serving.v2_inputs import v2_columns

pytestmark = pytest.mark.anyio


@pytest.fixture
async def churn(make_server: Any, client_for: Any, churn_model: Any) -> Any:
    return client_for(make_server(churn_model.name, {churn_model.version: churn_model.uri}))



async def test_server_and_model_metadata(churn: Any, churn_model: Any) -> None:
    name = churn_model.name
    assert (await churn.get("/v2")).json()["name"] == "ctcd"
    assert (await churn.get("/v2/health/live")).json() == {"live": True}
    assert (await churn.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await churn.get(f"/v2/models/{name}")).json()
    assert meta["name"] == name
    assert meta["versions"] == [churn_model.version]
    assert {i["name"] for i in meta["inputs"]} == set(churn_model.example.columns)
    assert {i["datatype"] for i in meta["inputs"]} == {"INT64", "FP64", "BYTES"}
    versioned = await churn.get(f"/v2/models/{name}/versions/{churn_model.version}")
    assert versioned.json()["versions"] == [churn_model.version]
    ready = await churn.get(f"/v2/models/{name}/versions/{churn_model.version}/ready")
    assert ready.json() == {"name": name, "ready": True}
    assert (await churn.get(f"/v2/models/{name}/ready")).status_code == 200


async def test_infer_matches_pyfunc(churn: Any, churn_model: Any) -> None:
    frame = churn_model.example
    want = mlflow.pyfunc.load_model(churn_model.uri).predict(frame)
    for path in (f"/v2/models/{churn_model.name}/infer",
                 f"/v2/models/{churn_model.name}/versions/{churn_model.version}/infer"):
        response = await churn.post(path, json={"id": "req-1", "inputs": v2_columns(frame)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == churn_model.name
        assert body["model_version"] == churn_model.version
        assert body["id"] == "req-1"
        (output,) = body["outputs"]
        assert output["name"] == "predict"
        assert output["shape"] == [len(frame)]
        assert output["datatype"] == "INT64"
        assert output["data"] == want.tolist()
        assert response.headers["x-model-version"] == churn_model.version


async def test_infer_accepts_column_tensors_of_shape_n_by_1(churn: Any,
                                                           churn_model: Any) -> None:
    inputs = v2_columns(churn_model.example.head(2))
    for item in inputs:
        item["shape"] = [2, 1]
        item["data"] = [[v] for v in item["data"]]
    response = await churn.post(f"/v2/models/{churn_model.name}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    assert response.json()["id"]  # generated when the client sends none


async def test_one_matrix_tensor_for_a_numeric_model(make_server: Any, client_for: Any,
                                                     numeric_model: Any) -> None:
    client = client_for(make_server("numeric", {"1": numeric_model.uri}))
    frame = numeric_model.example
    response = await client.post("/v2/models/numeric/infer", json={"inputs": [
        {"name": "input-0", "shape": list(frame.shape), "datatype": "FP64",
         "data": frame.to_numpy().ravel().tolist()}]})
    assert response.status_code == 200, response.text
    want = mlflow.pyfunc.load_model(numeric_model.uri).predict(frame)
    assert np.array_equal(response.json()["outputs"][0]["data"], want)
    wrong = await client.post("/v2/models/numeric/infer", json={"inputs": [
        {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
    assert wrong.status_code == 400
    assert "expects 20" in wrong.json()["error"]
    # a request the one-pass path leaves to the checks still gets them, naming the field
    row = frame.to_numpy()[0].tolist()
    for shape, data, field in (([1.0, 20], row, "inputs.input-0.shape"),
                               ([True, 20], row, "inputs.input-0.shape"),
                               ([1, 20], row[:-1], "inputs.input-0.data"),
                               ([1, 20], ["x", *row[1:]], "inputs.input-0.data")):
        bad = await client.post("/v2/models/numeric/infer", json={"inputs": [
            {"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}]})
        assert bad.status_code == 400, (shape, data, bad.text)
        assert field in bad.json()["error"], (shape, data, bad.json())


def _bad_cases(example: Any) -> list[tuple[str, Any, tuple[str, ...]]]:
    good = v2_columns(example.head(2))

    def changed(name: str, **fields: Any) -> list[dict[str, Any]]:
        return [dict(i, **fields) if i["name"] == name else i for i in good]

    return [
        ("no inputs", {"inputs": []}, ("inputs",)),
        ("inputs not a list", {"inputs": {"a": 1}}, ("inputs",)),
        ("missing column", {"inputs": [i for i in good if i["name"] != "age"]}, ("age",)),
        ("unknown datatype", {"inputs": changed("age", datatype="INT128")},
         ("inputs.age.datatype",)),
        ("wrong datatype", {"inputs": changed("region", datatype="FP64", data=[1.0, 2.0])},
         ("inputs.region.datatype", "BYTES")),
        ("shape and data disagree", {"inputs": changed("age", shape=[3])},
         ("inputs.age.data", "shape")),
        ("data not numbers", {"inputs": changed("age", data=["a", "b"])}, ("inputs.age.data",)),
        ("missing shape", {"inputs": [{"name": "age", "datatype": "INT64", "data": [1]}]},
         ("inputs.age.shape",)),
        ("bad id", {"id": 5, "inputs": good}, ("id",)),
        ("matrix for a column", {"inputs": changed("age", shape=[1, 2])},
         ("inputs.age.shape",)),
        ("shape of floats", {"inputs": changed("age", shape=[2.0])}, ("inputs.age.shape",)),
        ("shape with a bool", {"inputs": changed("age", shape=[2, True])},
         ("inputs.age.shape",)),
    ]


@pytest.mark.parametrize("case", range(12))
async def test_bad_infer_is_4xx_naming_the_field(churn: Any, churn_model: Any,
                                                 case: int) -> None:
    name, body, words = _bad_cases(churn_model.example)[case]
    response = await churn.post(f"/v2/models/{churn_model.name}/infer", json=body)
    assert 400 <= response.status_code < 500, (name, response.text)
    for word in words:
        assert word in response.json()["error"], (name, response.json())


async def test_unknown_model_or_version_is_404(churn: Any, churn_model: Any) -> None:
    assert (await churn.get("/v2/models/other")).status_code == 404
    response = await churn.post("/v2/models/other/infer", json={"inputs": []})
    assert response.status_code == 404
    assert "other" in response.json()["error"]
    missing = await churn.post(f"/v2/models/{churn_model.name}/versions/99/infer",
                               json={"inputs": v2_columns(churn_model.example)})
    assert missing.status_code == 404
    assert "'99'" in missing.json()["error"]


async def test_not_json_is_400(churn: Any, churn_model: Any) -> None:
    response = await churn.post(f"/v2/models/{churn_model.name}/infer", content=b"[1,",
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "body" in response.json()["error"]


async def test_output_selection_in_json(churn: Any, churn_model: Any) -> None:
    frame = churn_model.example
    path = f"/v2/models/{churn_model.name}/infer"
    response = await churn.post(path, json={"inputs": v2_columns(frame),
                                             "outputs": [{"name": "predict_proba"}]})
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "predict_proba", "FP64", [len(frame), 2])
    want = mlflow.sklearn.load_model(churn_model.uri).predict_proba(frame)
    np.testing.assert_allclose(np.reshape(output["data"], (len(frame), 2)), want)
    for outputs, word in (([{"name": "nope"}], "'nope'"), ([{}], "outputs[0].name"),
                          ({"name": "predict"}, "outputs")):
        bad = await churn.post(path, json={"inputs": v2_columns(frame), "outputs": outputs})
        assert bad.status_code == 400, bad.text
        assert word in bad.json()["error"]
    # the MLflow route keeps MLflow's semantics: predictions, whatever V2 offers
    mlflow_answer = await churn.post("/invocations", json={"dataframe_split": {
        "columns": list(frame.columns), "data": frame.to_numpy().tolist()}})
    assert mlflow_answer.json()["predictions"] == np.argmax(want, axis=1).tolist()


async def test_predict_datatype_in_metadata_is_the_one_answered(churn: Any, churn_model: Any,
                                                                make_server: Any,
                                                                client_for: Any,
                                                                tmp_path: Any) -> None:
    """Integer labels are INT64 and text labels BYTES, in the metadata and the answers."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from ctcd.serving.model import load

    meta = (await churn.get(f"/v2/models/{churn_model.name}")).json()
    assert meta["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [-1]}
    frame = churn_model.example
    answer = await churn.post(f"/v2/models/{churn_model.name}/infer",
                              json={"inputs": v2_columns(frame)})
    assert answer.json()["outputs"][0]["datatype"] == "INT64"

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    labels = LogisticRegression().fit(x, ["no", "yes", "no", "yes"])
    mlflow.sklearn.save_model(labels, str(tmp_path / "labels"), input_example=x.head(2),
                              signature=mlflow.models.infer_signature(x, labels.predict(x)))
    server = make_server("labels", {"1": str(tmp_path / "labels")}, loader=load)
    client = client_for(server)
    meta = (await client.get("/v2/models/labels")).json()
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("predict", "BYTES"), ("predict_proba", "FP64")]
    answer = await client.post("/v2/models/labels/infer", json={"inputs": [
        {"name": c, "shape": [4], "datatype": "FP64", "data": x[c].tolist()} for c in x]})
    (output,) = answer.json()["outputs"]
    assert (output["datatype"], output["data"]) == ("BYTES", labels.predict(x).tolist())


def test_clean_columns_build_what_the_checked_path_builds(churn_model: Any) -> None:
    """The one-pass path for clean JSON columns gives the arrays the column-by-column
    checks give, and leaves anything else to those checks."""
    from ctcd.serving.model import load
    from ctcd.serving.protocols import v2, v2_tensors

    schema = load(churn_model.uri).schema
    assert schema is not None
    inputs = v2_columns(churn_model.example)
    fast = v2.clean_columns(inputs, schema)
    assert fast is not None
    tensors = [v2_tensors.tensor_from_json(i, item) for i, item in enumerate(inputs)]
    checked = v2.to_request(tensors, schema).table
    assert checked is not None and fast.rows == checked.rows == len(churn_model.example)
    assert list(fast.arrays) == list(checked.arrays) == list(schema.names)
    for name, array in checked.arrays.items():
        assert fast.arrays[name].dtype == array.dtype, name
        assert fast.arrays[name].tolist() == array.tolist(), name
    numbers = next(i for i in inputs if i["datatype"] == "FP64")
    texts = next(i for i in inputs if i["datatype"] == "BYTES")
    n = len(numbers["data"])
    for changed in ({**numbers, "datatype": "FP32"}, {**numbers, "data": [1] * n},
                    {**numbers, "shape": [n, 2]}, {**numbers, "data": numbers["data"][:-1]},
                    {**texts, "data": [1] * n}, {**texts, "datatype": "INT64"},
                    {**numbers, "shape": [float(n)]}, {**numbers, "shape": [n, True]}):
        swapped = [changed if i["name"] == changed["name"] else i for i in inputs]
        assert v2.clean_columns(swapped, schema) is None, changed
    assert v2.clean_columns(inputs[:-1], schema) is None
    assert v2.clean_columns([*inputs[:-1], inputs[0]], schema) is None


def test_clean_matrix_builds_what_the_checked_path_builds(numeric_model: Any) -> None:
    """One clean ``[n, k]`` FP64 tensor of floats gets the block the checked path gives;
    anything else is left to the checks (which name what is wrong)."""
    from ctcd.serving.model import load
    from ctcd.serving.protocols import v2, v2_tensors

    schema = load(numeric_model.uri).schema
    assert schema is not None
    frame = numeric_model.example
    rows, width = frame.shape
    data = frame.to_numpy().ravel().tolist()
    good = {"name": "input-0", "shape": [rows, width], "datatype": "FP64", "data": data}
    fast = v2.clean_matrix([good], schema)
    checked = v2.to_request([v2_tensors.tensor_from_json(0, good)], schema).table
    assert fast is not None and checked is not None
    assert fast.block is not None and checked.block is not None
    assert fast.block.dtype == checked.block.dtype and fast.block.flags.c_contiguous
    assert np.array_equal(fast.block, checked.block)
    assert fast.names == checked.names and fast.rows == checked.rows == rows
    for changed in ({**good, "datatype": "FP32"}, {**good, "datatype": "INT64"},
                    {**good, "data": [int(v) for v in data]}, {**good, "data": [1, *data[1:]]},
                    {**good, "data": [True, *data[1:]]},
                    {**good, "data": [data[i * width:(i + 1) * width] for i in range(rows)]},
                    {**good, "shape": [float(rows), width]}, {**good, "shape": [rows, True]},
                    {**good, "shape": [rows * width]}, {**good, "shape": [rows, width, 1]},
                    {**good, "shape": [rows - 1, width]}, {**good, "data": data[:-1]},
                    {**good, "name": "f0"}, {**good, "name": ""},
                    {**good, "shape": [0, width], "data": []}):
        assert v2.clean_matrix([changed], schema) is None, changed
    assert v2.clean_matrix([good, good], schema) is None
    one = {"name": "input-0", "shape": [True, width], "datatype": "FP64", "data": data[:width]}
    assert v2.clean_matrix([one], schema) is None
