"""Prometheus metrics, the sampled request log, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.routing import Route
from tests.serving.conftest import fake_loader

from ctcd.serving.reqlog import RequestLog
from ctcd.serving.rest import create_app

pytestmark = pytest.mark.anyio
ROW = {"dataframe_records": [{"a": 2, "b": "x"}, {"a": 3, "b": "y"}]}


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in metrics")


async def test_metrics_per_version(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.01))
    client = client_for(server)
    await asyncio.gather(*(client.post("/invocations", json=ROW) for _ in range(6)))
    await client.post("/invocations", json={"dataframe_records": [{"a": "x", "b": "y"}]})
    v2 = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1]},
                     {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    await client.post("/v2/models/fake/infer", json=v2)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    common = {"model": "fake", "version": "1"}
    assert _value(text, "ctcd_model_requests_total", protocol="mlflow", status="200",
                  **common) == 6
    assert _value(text, "ctcd_model_requests_total", protocol="v2", status="200", **common) == 1
    assert _value(text, "ctcd_model_request_errors_total", protocol="mlflow", status="400",
                  **common) == 1
    assert _value(text, "ctcd_model_rows_scored_total", **common) == 13
    assert _value(text, "ctcd_model_request_duration_seconds_count", protocol="mlflow",
                  **common) == 7
    assert _value(text, "ctcd_model_batch_rows_sum", **common) >= 13
    assert _value(text, "ctcd_model_batch_requests_count", **common) < 8  # merged
    assert _value(text, "ctcd_model_version_weight", **common) == 1.0


async def test_request_log_samples_off_the_request_path(make_server: Any, client_for: Any,
                                                        tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "requests.sqlite", sample_rate=1.0, flush_seconds=0.05)
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(), sink=log)
    client = client_for(server)
    for _ in range(3):
        assert (await client.post("/invocations", json=ROW)).status_code == 200
    await client.post("/invocations", json={"dataframe_records": [{"a": "bad", "b": "x"}]})
    log.close()
    with sqlite3.connect(tmp_path / "requests.sqlite") as db:
        rows = db.execute("SELECT model_name, model_version, protocol, rows, inputs, outputs, "
                          "latency_ms FROM requests").fetchall()
    assert len(rows) == 3  # the failed request is not logged
    name, version, protocol, count, inputs, outputs, latency = rows[0]
    assert (name, version, protocol, count) == ("fake", "1", "mlflow", 2)
    assert orjson.loads(inputs) == {"a": [2, 3], "b": ["x", "y"]}
    assert orjson.loads(outputs) == [20, 30]
    assert latency > 0


def test_request_log_sampling_rate(tmp_path: Path) -> None:
    from ctcd.serving.protocols import ScoringRequest

    log = RequestLog(tmp_path / "r.sqlite", sample_rate=0.0)
    log.offer(model_name="m", version="1", protocol="mlflow", request_id="r",
              request=ScoringRequest(), output=[], latency_ms=1.0)
    log.close()
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute("SELECT count(*) FROM requests").fetchone() == (0,)


async def test_openapi_documents_every_route(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader())
    client = client_for(server)
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    app = create_app(server)
    served = {(route.path, method) for route in app.routes if isinstance(route, Route)
              for method in (route.methods or ()) if method not in ("HEAD", "OPTIONS")}
    assert served == documented
    # every path answers OPTIONS (its Allow header), which the document leaves implicit
    assert all("OPTIONS" in (route.methods or ()) for route in app.routes
               if isinstance(route, Route))
    for path, ops in doc["paths"].items():
        for name in re.findall(r"{(\w+)}", path):
            for op in ops.values():
                assert name in {p["name"] for p in op.get("parameters", [])}, (path, name)
