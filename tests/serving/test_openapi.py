"""The OpenAPI document describes what the live server does: schemathesis (a schema-driven
fuzzer) finds no request the document allows that the server refuses, no undocumented
status, no 5xx. Deterministic and short: fixed generation, 20 examples per operation,
the admin API (which changes state) and V2 infer (whose tensor shape JSON Schema cannot
tie to its data) left out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.serving.conftest import live_server


@pytest.fixture(scope="module")
def churn_url(churn_model: Any, mlflow_server: str) -> Iterator[str]:
    with live_server("--model-uri", churn_model.uri, "--model-name", churn_model.name,
                     "--model-version", churn_model.version) as url:
        yield url


def test_no_token_means_no_security(churn_url: str) -> None:
    doc = httpx.get(f"{churn_url}/openapi.json", timeout=30).json()
    operations = [op for ops in doc["paths"].values() for op in ops.values()]
    assert not any("security" in op for op in operations)
    records = doc["components"]["schemas"]["MlflowRequest"]["oneOf"][1]
    assert records["properties"]["dataframe_records"]["minItems"] == 1


def test_schemathesis_finds_nothing(churn_url: str, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"  # installed beside pytest
    result = subprocess.run(
        [str(schemathesis), "run", f"{churn_url}/openapi.json", "--checks", "all",
         "--max-examples", "20", "--generation-deterministic", "--no-color",
         "--exclude-path-regex", "^/admin|/infer$"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    failures = result.stdout.partition("FAILURES")[2].partition("WARNINGS")[0]
    assert result.returncode == 0, "\n".join(line[:300] for line in failures.splitlines())


ADMIN_BODIES = [("post", "/admin/versions", {"model_uri": "fake://2", "version": "2"}),
                ("put", "/admin/traffic", {"weights": {"1": 1.0}}),
                ("put", "/admin/shadow", {"version": "2", "mirror_percent": 10,
                                          "timeout_ms": 500, "tolerance": 0.01,
                                          "window_seconds": 30})]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_BODIES,
                         ids=[p for _, p, _ in ADMIN_BODIES])
async def test_admin_bodies_the_server_refuses_extra_fields_of_say_so(
        make_server: Any, client_for: Any, method: str, path: str, body: dict[str, Any]) -> None:
    from tests.serving.conftest import fake_loader

    from ctcd.serving.openapi import document

    client = client_for(make_server("fake", {"1": "fake://1", "2": "fake://2"},
                                    loader=fake_loader()))
    doc = document("fake")
    schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert schema["additionalProperties"] is False
    assert set(body) == set(schema["properties"]) >= set(schema["required"])
    refused = await client.request(method, path, json={**body, "surprise": 1})
    assert refused.status_code == 400 and "surprise" in refused.json()["error"]
    accepted = await client.request(method, path, json=body)
    assert accepted.status_code in (200, 201), accepted.text
