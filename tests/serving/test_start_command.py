"""The start command the deployer runs: one real server process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
from tests.serving.conftest import records

READY = re.compile(r"^ctcd model server listening on http://127\.0\.0\.1:(\d+)$")


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ctcd.serving", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_start_serve_and_stop(churn_model: Any, mlflow_server: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
           "CTCD_SERVER_ADMIN_TOKEN": "adm"}
    proc = _start("--model-uri", churn_model.uri, "--model-name", churn_model.name,
                  "--model-version", churn_model.version, "--host", "127.0.0.1",
                  "--port", "0", "--workers", "1", env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY.match(line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{match.group(1)}"
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/ping").status_code == 200  # ready as soon as announced
            response = client.post("/invocations", json={
                "dataframe_records": records(churn_model.example.head(3))})
            assert response.status_code == 200
            assert len(response.json()["predictions"]) == 3
            assert response.headers["x-model-name"] == churn_model.name
            assert response.headers["x-model-version"] == churn_model.version
            assert client.get("/admin/versions").status_code == 401
            versions = client.get("/admin/versions", headers={"Authorization": "Bearer adm"})
            assert versions.json()["versions"][0]["weight"] == 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_start_fails_clearly_on_a_bad_model(mlflow_server: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    proc = _start("--model-uri", "models:/does-not-exist/1", "--model-name", "x",
                  "--model-version", "1", "--port", "0", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "listening" not in out
    assert "models:/does-not-exist/1" in err


def test_workers_share_one_admin_state(churn_versions: Any, mlflow_server: str) -> None:
    first, second = churn_versions
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    proc = _start("--model-uri", first.uri, "--model-name", first.name, "--model-version",
                  first.version, "--host", "127.0.0.1", "--port", "0", "--workers", "2",
                  env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY.match(line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        with httpx.Client(base_url=base, timeout=120) as admin:
            added = admin.post("/admin/versions", json={"model_uri": second.uri,
                                                        "version": second.version})
            assert added.status_code == 201, added.text
            split = admin.put("/admin/traffic", json={"weights": {second.version: 1.0}})
            assert split.status_code == 200, split.text
        body = {"dataframe_records": records(first.example.head(2))}
        answered = set()
        for _ in range(24):  # a new connection each time: the kernel spreads them
            with httpx.Client(base_url=base, timeout=30) as client:
                response = client.post("/invocations", json=body)
                assert response.status_code == 200
                answered.add(response.headers["x-model-version"])
        assert answered == {second.version}
        with httpx.Client(base_url=base, timeout=60) as admin:
            versions = {v["version"]: v for v in admin.get("/admin/versions").json()["versions"]}
            assert versions[second.version]["requests"] == 24  # summed over both workers
            assert versions[first.version]["weight"] == 0.0
            bad = admin.put("/admin/traffic", json={"weights": {"nope": 1.0}})
            assert bad.status_code == 400
        for _ in range(6):  # whichever worker a scrape reaches, it counts all requests
            with httpx.Client(base_url=base, timeout=30) as client:
                text = client.get("/metrics").text
            assert _sample(text, "ctcd_model_requests_total", version=second.version,
                           status="200") == 24
            assert _sample(text, "ctcd_model_version_weight", version=second.version) == 1.0
            assert _sample(text, "ctcd_model_version_weight", version=first.version) == 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())
