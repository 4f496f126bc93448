"""Scoring through an endpoint: what is retried (5xx, connection errors) and what is not (4xx),
batching, and the answering version per row. The server is a real HTTP server on loopback
whose answers the test scripts (a model server cannot be told to fail on cue); what a real
model server answers is read back with its type and shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.serving.conftest import live_server

from ctcd.batch.endpoint import RemotePredictor, signature_schema
from ctcd.errors import InvalidParams, ModelServerUnavailable
from ctcd.serving.errors import ModelRejectedInput
from ctcd.serving.schema import ColumnSpec, InputSchema, Table, check_columns
from ctcd.stack.processes import free_port

SCHEMA = InputSchema(columns=(ColumnSpec("x", "double", True),))


class Script:
    """Status codes to answer, in order (then 200s); the rows and route of every request
    seen."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.seen: list[int] = []
        self.paths: list[str] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/invocations":
                xs = [r[0] for r in body["dataframe_split"]["data"]]
            else:  # V2 column tensors
                [x] = [i for i in body["inputs"] if i["name"] == "x"]
                assert x["datatype"] == "FP64" and x["shape"] == [len(x["data"])]
                xs = x["data"]
            with script.lock:
                script.seen.append(len(xs))
                script.paths.append(self.path)
                script.bodies.append(body)
                status = script.statuses.pop(0) if script.statuses else 200
            doubled = [v * 2 for v in xs]
            ok = ({"predictions": doubled} if self.path == "/invocations" else
                  {"model_name": "m", "model_version": "7", "outputs": [
                      {"name": "predict", "datatype": "FP64", "shape": [len(xs)],
                       "data": doubled}]})
            payload = (ok if status == 200
                       else {"error": "x[0]: expected a number" if status < 500 else "boom"})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Model-Version", "7")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def _table(rows: int) -> Table:
    return Table({"x": np.arange(rows, dtype="float64")}, rows)


def test_batches_concurrently_and_records_the_answering_version(server) -> None:
    endpoint, script = server
    remote = RemotePredictor(endpoint, SCHEMA, batch_rows=40, concurrency=3)
    try:
        predictions = remote.predict_table(_table(100))
    finally:
        remote.close()
    assert predictions.tolist() == [i * 2.0 for i in range(100)]  # in input order
    assert sorted(script.seen) == [20, 40, 40]
    assert remote.answered[0].tolist() == ["7"] * 100


def test_retries_server_errors_then_succeeds(server) -> None:
    endpoint, script = server
    script.statuses = [503, 500]
    remote = RemotePredictor(endpoint, SCHEMA, batch_rows=10, concurrency=1, attempts=3)
    try:
        assert remote.predict_table(_table(5)).tolist() == [0, 2, 4, 6, 8]
    finally:
        remote.close()
    assert script.seen == [5, 5, 5] and remote.retried == 2


def test_gives_up_after_the_attempts_with_a_clear_error(server) -> None:
    endpoint, script = server
    script.statuses = [502] * 5
    remote = RemotePredictor(endpoint, SCHEMA, attempts=2)
    with pytest.raises(ModelServerUnavailable, match=r"answered 502: .*after 2 tries"):
        remote.predict_table(_table(3))
    remote.close()
    assert script.seen == [3, 3]


def test_a_client_error_is_never_retried(server) -> None:
    endpoint, script = server
    script.statuses = [422]
    remote = RemotePredictor(endpoint, SCHEMA, attempts=4)
    with pytest.raises(ModelRejectedInput, match="422 from the model server: x\\[0\\]"):
        remote.predict_table(_table(3))
    remote.close()
    assert script.seen == [3] and remote.answered == []


def test_connection_errors_are_retried_then_reported() -> None:
    remote = RemotePredictor(f"http://127.0.0.1:{free_port()}", SCHEMA, attempts=3)
    with pytest.raises(ModelServerUnavailable, match="did not answer after 3 tries"):
        remote.predict_table(_table(2))
    remote.close()
    assert remote.requests == 3 and remote.retried == 2


def test_refuses_a_nonsense_setting() -> None:
    with pytest.raises(InvalidParams, match="at least 1"):
        RemotePredictor("http://127.0.0.1:1", SCHEMA, concurrency=0)


SCHEMA_2 = InputSchema(columns=(ColumnSpec("x", "double", True), ColumnSpec("n", "long", True),
                                ColumnSpec("t", "string", False)))


def test_sends_v2_column_tensors_and_falls_back_where_a_column_has_gaps(server) -> None:
    endpoint, script = server
    remote = RemotePredictor(endpoint, SCHEMA_2, model_name="m", batch_rows=3, concurrency=1)
    table = Table({"x": np.arange(6, dtype="float64"), "n": np.arange(6, dtype="int64"),
                   "t": np.array(["a", "b", "c", "d", None, "f"], dtype=object)}, 6)
    try:
        assert remote.predict_table(table).tolist() == [i * 2.0 for i in range(6)]
    finally:
        remote.close()
    # the second request has a missing optional text value: V2 tensors cannot carry it
    assert script.paths == ["/v2/models/m/infer", "/invocations"]
    inputs = {i["name"]: i for i in script.bodies[0]["inputs"]}
    assert [(n, i["datatype"], i["data"]) for n, i in inputs.items()] == [
        ("x", "FP64", [0.0, 1.0, 2.0]), ("n", "INT64", [0, 1, 2]), ("t", "BYTES", ["a", "b", "c"])]
    assert script.bodies[1]["dataframe_split"]["data"][1] == [4.0, 4, None]
    assert remote.answered[0].tolist() == ["7"] * 6


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["xgboost-regression", "xgboost-booster", "sklearn-multiclass"])
def test_a_model_servers_answers_keep_their_type_and_shape(kind: str,
                                                           flavored_model: Any) -> None:
    """Through a real model server: a regressor's float32 answers stay float32 (as scored in
    process), a Booster's class probabilities one row of three per input row, text labels
    text; each equal to MLflow's own loader's (tests/flavored_models.py)."""
    model = flavored_model(kind)
    schema = signature_schema(model.uri)
    frame = pd.concat([model.frame] * 3, ignore_index=True)
    table = check_columns(schema, {c: frame[c].tolist() for c in frame.columns}, "")
    with live_server("--model-uri", model.uri, "--model-name", model.name,
                     "--model-version", model.version) as url:
        remote = RemotePredictor(url, schema, model_name=model.name, batch_rows=25,
                                 concurrency=2)
        try:
            got = remote.predict_table(table)
        finally:
            remote.close()
    expected = model.expected(frame)
    assert got.shape == expected.shape
    if expected.dtype.kind in "iuf":
        assert got.dtype == expected.dtype
    assert got.tolist() == expected.tolist()
