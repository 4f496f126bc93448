"""The V2 binary tensor data extension and output selection, against a live server, with
Triton's own HTTP client (what Triton users and the KServe SDK's numpy path send)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import tritonclient.http as triton
from tests.serving.conftest import live_server
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def churn_url(churn_model: Any, mlflow_server: str) -> Iterator[str]:
    with live_server("--model-uri", churn_model.uri, "--model-name", churn_model.name,
                     "--model-version", churn_model.version) as url:
        yield url


@pytest.fixture(scope="module")
def numeric_url(numeric_model: Any, mlflow_server: str) -> Iterator[str]:
    with live_server("--model-uri", numeric_model.uri, "--model-name", "numeric",
                     "--model-version", numeric_model.version) as url:
        yield url


def _client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)


def _column_inputs(frame: Any) -> list[triton.InferInput]:
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind in "OU":
            values = values.astype(object)
            tensor = triton.InferInput(name, [len(values)], "BYTES")
        else:
            tensor = triton.InferInput(name, [len(values)],
                                       "INT64" if values.dtype.kind == "i" else "FP64")
        tensor.set_data_from_numpy(values, binary_data=True)
        inputs.append(tensor)
    return inputs


def test_numeric_matrix_in_binary(numeric_url: str, numeric_model: Any) -> None:
    frame = numeric_model.example
    tensor = triton.InferInput("input-0", list(frame.shape), "FP64")
    tensor.set_data_from_numpy(frame.to_numpy(), binary_data=True)
    with _client(numeric_url) as client:
        assert client.is_server_ready()
        result = client.infer("numeric", [tensor])  # no outputs named: all in binary
    want = mlflow.pyfunc.load_model(numeric_model.uri).predict(frame)
    assert np.array_equal(result.as_numpy("predict"), want)
    assert result.get_response()["model_version"] == numeric_model.version


def test_churn_with_string_columns_and_predict_proba(churn_url: str,
                                                      churn_model: Any) -> None:
    frame = churn_model.example
    outputs = [triton.InferRequestedOutput("predict_proba", binary_data=True),
               triton.InferRequestedOutput("predict", binary_data=False)]
    with _client(churn_url) as client:
        meta = client.get_model_metadata(churn_model.name)
        result = client.infer(churn_model.name, _column_inputs(frame), outputs=outputs,
                              request_id="b-1")
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["outputs"][1]["shape"] == [-1, 2]
    sklearn_model = mlflow.sklearn.load_model(churn_model.uri)
    proba = result.as_numpy("predict_proba")
    assert proba.dtype == np.float64
    assert proba.shape == (len(frame), 2)
    np.testing.assert_allclose(proba, sklearn_model.predict_proba(frame))
    assert result.as_numpy("predict").tolist() == sklearn_model.predict(frame).tolist()
    response = result.get_response()
    assert response["id"] == "b-1"
    assert [o["name"] for o in response["outputs"]] == ["predict_proba", "predict"]
    assert "binary_data_size" in response["outputs"][0]["parameters"]


def test_unknown_output_is_400_naming_it(churn_url: str, churn_model: Any) -> None:
    with _client(churn_url) as client, pytest.raises(InferenceServerException) as err:
        client.infer(churn_model.name, _column_inputs(churn_model.example.head(2)),
                     outputs=[triton.InferRequestedOutput("scores")])
    assert err.value.status() == "400"
    assert "outputs[0].name" in err.value.message()
    assert "'scores'" in err.value.message()


def _binary_body(header: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    import orjson

    head = orjson.dumps(header)
    return head + data, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


@pytest.mark.parametrize(("size", "data", "words"), [
    (16, np.zeros(20, "<f8").tobytes(), "inputs.input-0.data"),  # size != shape
    (200, np.zeros(20, "<f8").tobytes(), "binary_data_size"),  # past the end
    (160, np.zeros(21, "<f8").tobytes(), "bytes after the last tensor"),
])
def test_bad_binary_request_is_400(numeric_url: str, size: int, data: bytes,
                                   words: str) -> None:
    header = {"inputs": [{"name": "input-0", "shape": [1, 20], "datatype": "FP64",
                          "parameters": {"binary_data_size": size}}]}
    body, headers = _binary_body(header, data)
    response = httpx.post(f"{numeric_url}/v2/models/numeric/infer", content=body,
                          headers=headers, timeout=60)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_bytes_that_are_not_utf8_are_400(churn_url: str, churn_model: Any) -> None:
    frame = churn_model.example.head(1)
    header: dict[str, Any] = {"inputs": []}
    data = b""
    for name in frame.columns:
        value = frame[name].iloc[0]
        if isinstance(value, str):
            raw = struct.pack("<I", 2) + (b"\xff\xfe" if name == "region" else b"ok")
            tensor = {"name": name, "shape": [1], "datatype": "BYTES"}
        else:
            raw = np.array([value], "<i8" if isinstance(value, np.integer) else "<f8").tobytes()
            tensor = {"name": name, "shape": [1],
                      "datatype": "INT64" if isinstance(value, np.integer) else "FP64"}
        header["inputs"].append({**tensor, "parameters": {"binary_data_size": len(raw)}})
        data += raw
    body, headers = _binary_body(header, data)
    response = httpx.post(f"{churn_url}/v2/models/{churn_model.name}/infer", content=body,
                          headers=headers, timeout=60)
    assert response.status_code == 400, response.text
    assert "inputs.region" in response.json()["error"]
