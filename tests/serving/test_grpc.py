"""V2 over gRPC on a live server, with Triton's gRPC client (raw_input_contents) and its
generated messages and stub (typed contents): same routing, validation, auth, metrics
and request log as REST. (Triton's messages own the ``inference.*`` names in this
process's protobuf pool, so the server's proto is compiled only in the server.)"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import mlflow
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton
from tests.serving.conftest import grpc_stub, live_server, typed_request
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ctcd.stack.processes import free_port

TOKEN = "grpc-secret"
AUTH = [("authorization", f"Bearer {TOKEN}")]


@pytest.fixture(scope="module")
def live(churn_versions: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    first, _ = churn_versions
    port = free_port()
    log = tmp_path_factory.mktemp("grpc") / "requests.sqlite"
    with live_server("--model-uri", first.uri, "--model-name", first.name,
                     "--model-version", first.version, "--grpc-port", str(port),
                     "--request-log-sample-rate", "1", "--request-log-path", str(log),
                     env={"CTCD_SERVER_TOKEN": TOKEN}) as url:
        yield type("Live", (), {"url": url, "grpc": f"127.0.0.1:{port}", "log": log})


def test_triton_client_infers_with_predict_proba(live: Any, churn_versions: Any) -> None:
    first, _ = churn_versions
    frame = first.example
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        datatype = {"i": "INT64", "f": "FP64"}.get(values.dtype.kind, "BYTES")
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values.astype(object) if datatype == "BYTES" else values)
        inputs.append(tensor)
    client = triton.InferenceServerClient(live.grpc)
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(first.name, headers=headers)
    meta = client.get_model_metadata(first.name, headers=headers, as_json=True)
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    result = client.infer(first.name, inputs, request_id="g-1", headers=headers,
                          outputs=[triton.InferRequestedOutput("predict"),
                                   triton.InferRequestedOutput("predict_proba")])
    sklearn_model = mlflow.sklearn.load_model(first.uri)
    assert result.as_numpy("predict").tolist() == sklearn_model.predict(frame).tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"),
                               sklearn_model.predict_proba(frame))
    response = result.get_response(as_json=True)
    assert (response["id"], response["model_version"]) == ("g-1", first.version)
    with pytest.raises(InferenceServerException) as err:
        client.infer(first.name, inputs)  # no token
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    client.close()


def test_typed_contents_validation_and_traffic_split(live: Any, churn_versions: Any) -> None:
    first, second = churn_versions
    frame = first.example.head(5)
    pb, stub, channel = grpc_stub(live)
    with channel:
        answer = stub.ModelInfer(typed_request(pb, first.name, frame), metadata=AUTH)
        (output,) = answer.outputs
        want = mlflow.pyfunc.load_model(first.uri).predict(frame).tolist()
        assert (output.name, list(output.shape)) == ("predict", [5])
        assert list(output.contents.int64_contents) == want
        bad = typed_request(pb, first.name, frame)
        bad.inputs[0].contents.int64_contents.append(7)  # 6 values for shape [5]
        bad.outputs.add(name="predict")
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(bad, metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"inputs.{frame.columns[0]}.data" in str(err.value.details())
        unknown = typed_request(pb, first.name, frame)
        unknown.outputs.add(name="nope")
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(unknown, metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "outputs[0].name" in str(err.value.details())
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(typed_request(pb, "other", frame), metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # the admin API moves traffic; gRPC follows the same split
        with httpx.Client(base_url=live.url, timeout=120) as admin:
            added = admin.post("/admin/versions", json={"model_uri": second.uri,
                                                        "version": second.version})
            assert added.status_code == 201, added.text
            moved = admin.put("/admin/traffic", json={"weights": {second.version: 1}})
            assert moved.status_code == 200, moved.text
        try:
            answer = stub.ModelInfer(typed_request(pb, first.name, frame), metadata=AUTH)
            assert answer.model_version == second.version
            want = mlflow.pyfunc.load_model(second.uri).predict(frame).tolist()
            assert list(answer.outputs[0].contents.int64_contents) == want
            pinned = typed_request(pb, first.name, frame)
            pinned.model_version = first.version
            assert stub.ModelInfer(pinned, metadata=AUTH).model_version == first.version
        finally:
            with httpx.Client(base_url=live.url, timeout=120) as admin:
                admin.put("/admin/traffic", json={"weights": {first.version: 1}})


def test_grpc_is_counted_and_logged(live: Any, churn_versions: Any) -> None:
    first, _ = churn_versions
    pb, stub, channel = grpc_stub(live)
    with channel:
        _, call = stub.ModelInfer.with_call(typed_request(pb, first.name, first.example.head(2)),
                                            metadata=[*AUTH, ("x-request-id", "grpc-corr-1")])
        made = dict(stub.ModelInfer.with_call(typed_request(pb, first.name, first.example),
                                              metadata=AUTH)[1].trailing_metadata())
        with pytest.raises(grpc.RpcError) as refused:  # no token: the id comes back too
            stub.ModelInfer(typed_request(pb, first.name, first.example),
                            metadata=[("x-request-id", "grpc-corr-2")])
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-corr-1"
    assert dict(call.trailing_metadata())["x-model-runtime"] == "sklearn"  # not compiled
    assert made["x-request-id"] and made["x-request-id"] != "grpc-corr-1"
    assert dict(refused.value.trailing_metadata())["x-request-id"] == "grpc-corr-2"
    text = httpx.get(f"{live.url}/metrics", timeout=30).text
    assert 'protocol="grpc"' in text
    assert any(line.startswith("ctcd_model_requests_total{") and 'protocol="grpc"' in line
               and 'status="200"' in line for line in text.splitlines())
    deadline = time.monotonic() + 30
    rows: list[Any] = []
    while time.monotonic() < deadline and not rows:
        if Path(live.log).exists():
            with sqlite3.connect(live.log) as db:
                rows = db.execute("SELECT request_id, rows FROM requests WHERE protocol = "
                                  "'grpc' AND request_id = 'grpc-corr-1'").fetchall()
        time.sleep(0.2)
    assert rows == [("grpc-corr-1", 2)]


def test_every_worker_serves_grpc(churn_model: Any, mlflow_server: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctcd.serving", "--model-uri", churn_model.uri,
         "--model-name", churn_model.name, "--model-version", churn_model.version,
         "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--grpc-port", str(port)],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert re.match(r"^ctcd model server listening on http://", proc.stdout.readline())
        assert proc.stdout.readline().strip() == (f"ctcd model server gRPC listening on "
                                                  f"127.0.0.1:{port}")
        listening = {c.pid for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        workers = {p.pid for p in psutil.Process(proc.pid).children()}
        assert len(workers) == 2
        assert listening == workers
        frame = churn_model.example.head(3)
        for _ in range(6):  # a new connection each time: either worker answers
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                answer = stub.ModelInfer(typed_request(service_pb2, churn_model.name, frame))
                assert list(answer.outputs[0].shape) == [3]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
