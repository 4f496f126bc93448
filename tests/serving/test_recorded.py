"""A server whose version's compiled model recorded the original's answers: the graph,
checked against them, answers from the first request while the original loads behind it
and is compared again; recorded answers that do not match, an original that answers
differently once loaded, and an original that cannot be loaded are each handled and shown.

The model is the plan-churn pipeline of ``compiled_model`` (tests/serving/conftest.py),
compiled and written as ``ctcd models compile`` logs it."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.serving.conftest import live_server, plans_rows

from ctcd.serving import compiled as runtime
from ctcd.serving import recorded
from ctcd.serving.model import load

pytestmark = pytest.mark.e2e


def _copy(compiled_model: Any, tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(compiled_model.directory, directory)
    return directory


def _settled(url: str) -> dict[str, Any]:
    """The version's metadata once its original is no longer loading."""
    deadline = time.monotonic() + 60
    while True:
        meta = httpx.get(f"{url}/v2/models/plans", timeout=10).json()
        if "original" not in meta["parameters"] or time.monotonic() > deadline:
            return dict(meta)
        time.sleep(0.05)


def test_the_graph_answers_from_the_first_request_while_the_original_loads(
        compiled_model: Any) -> None:
    """Every answer, from the first request after ready, comes from ONNX Runtime and equals
    the pipeline's; the metadata says the original is loading, then that the graph was
    verified again against it, and describes the same outputs and classes throughout."""
    rows = plans_rows()
    body = {"dataframe_split": {"columns": list(rows.columns),
                                "data": rows.astype(object).values.tolist()}}
    expected = compiled_model.pipeline.predict(rows).tolist()
    with live_server("--model-uri", str(compiled_model.directory), "--model-name", "plans",
                     "--model-version", "1") as url, httpx.Client(timeout=30) as client:
        first = client.post(f"{url}/invocations", json=body)
        early = client.get(f"{url}/v2/models/plans").json()
        runtimes = [first.headers["x-model-runtime"]]
        assert first.json()["predictions"] == expected
        while "original" in client.get(f"{url}/v2/models/plans").json()["parameters"]:
            response = client.post(f"{url}/invocations", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == expected
            runtimes.append(response.headers["x-model-runtime"])
        late = _settled(url)
        after = client.post(f"{url}/invocations", json=body)
    assert early["parameters"]["original"] == "loading"
    assert "recorded when it was compiled" in early["parameters"]["compiled_reason"]
    assert set(runtimes) == {"onnxruntime"}, runtimes
    assert after.headers["x-model-runtime"] == "onnxruntime"
    assert after.json()["predictions"] == expected
    assert (late["parameters"]["runtime"], late["parameters"]["compiled"]) == (
        "onnxruntime", "verified")
    assert "verified again at load against the original" in late["parameters"]["compiled_reason"]
    assert early["outputs"] == late["outputs"]  # predict_proba, its width and classes
    assert [o["name"] for o in late["outputs"]] == ["predict", "predict_proba"]
    assert early["parameters"]["task"] == late["parameters"]["task"] == "binary"


def test_a_server_is_ready_and_answers_without_importing_the_original_library(
        compiled_model: Any) -> None:
    """scikit-learn, SciPy and skops refused to the whole process: the server still gets
    ready and answers with the graph; loading the original then fails, and the metadata
    says so while the graph keeps answering."""
    guard = textwrap.dedent("""
        import importlib.abc, runpy, sys
        refused = ("sklearn", "scipy", "skops")

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in refused:
                    raise ModuleNotFoundError(f"{name} is refused in this test")
                return None

        sys.meta_path.insert(0, Refuse())
        runpy.run_module("ctcd.serving", run_name="__main__", alter_sys=True)
    """)
    rows = plans_rows()
    body = {"dataframe_split": {"columns": list(rows.columns),
                                "data": rows.astype(object).values.tolist()}}
    proc = subprocess.Popen(
        [sys.executable, "-c", guard, "--model-uri", str(compiled_model.directory),
         "--model-name", "plans", "--model-version", "1", "--host", "127.0.0.1",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, proc.poll())
        url = line.split("listening on ")[1].strip()
        meta = _settled(url)
        response = httpx.post(f"{url}/invocations", json=body, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-runtime"] == "onnxruntime"
    assert response.json()["predictions"] == compiled_model.pipeline.predict(rows).tolist()
    original = meta["parameters"]["original"]
    assert original.startswith("failed: ModelLoadError"), original
    assert "ModuleNotFoundError: sklearn is refused in this test" in original


def test_recorded_answers_that_differ_refuse_the_graph_and_load_the_original(
        compiled_model: Any, tmp_path: Path) -> None:
    directory = _copy(compiled_model, tmp_path)
    path = directory / runtime.DIRECTORY / recorded.FILE
    doc = orjson.loads(path.read_bytes())
    doc["answers"]["predict"]["values"] = [1 - v for v in doc["answers"]["predict"]["values"]]
    path.write_bytes(orjson.dumps(doc))
    model = load(str(directory), original_later=True)
    assert model.native is None  # the graph was to answer first
    model.warm(compiled_later=True)
    view = model.compiled_view()
    assert (model.runtime, view["compiled"]) == ("sklearn", "refused")
    assert "re-verification at load failed: predict:" in view["compiled_reason"]
    assert "original" not in view  # loaded at once, not in the background
    rows = plans_rows()
    assert model.predict(rows).tolist() == compiled_model.pipeline.predict(rows).tolist()
    model.open_compiled()  # nothing left to open or load
    assert model.compiled_view() == view


def test_answers_recorded_for_another_graph_load_the_original_first(
        compiled_model: Any, tmp_path: Path) -> None:
    """Recorded answers name the graph they belong to: for any other, the original is loaded
    first and the graph opened later, as for a version compiled before answers were kept."""
    directory = _copy(compiled_model, tmp_path)
    path = directory / runtime.DIRECTORY / recorded.FILE
    doc = orjson.loads(path.read_bytes())
    doc["graph_sha256"] = "0" * 64
    path.write_bytes(orjson.dumps(doc))
    assert recorded.usable(directory) is None
    model = load(str(directory), original_later=True)
    assert model.native is not None
    model.warm(compiled_later=True)
    assert (model.runtime, model.compiled_view()["compiled"]) == ("sklearn", "pending")


def test_an_original_answering_differently_once_loaded_refuses_the_graph(
        compiled_model: Any, tmp_path: Path) -> None:
    """The graph matched the recorded answers, but the original loaded behind it answers
    otherwise (here: another model's files in its place): the original answers from then."""
    directory = _copy(compiled_model, tmp_path)
    model = load(str(directory), original_later=True)
    model.warm(compiled_later=True)
    assert model.runtime == "onnxruntime"
    loader = model.original_later
    assert loader is not None

    def inverted() -> tuple[Any, Any]:
        native, pyfunc = loader()
        assert native is not None
        flip = native.predict

        def predict(data: Any) -> Any:
            return 1 - flip(data)
        return dataclasses.replace(native, predict=predict), pyfunc

    model.original_later = inverted
    model.open_compiled()
    view = model.compiled_view()
    assert (model.runtime, view["compiled"]) == ("sklearn", "refused")
    assert "compared with the original once it was loaded: predict:" in view["compiled_reason"]
    rows = plans_rows()
    assert model.predict(rows).tolist() == (1 - compiled_model.pipeline.predict(rows)).tolist()


def test_recorded_answers_round_trip_and_unreadable_ones_are_ignored(
        compiled_model: Any, tmp_path: Path) -> None:
    directory = _copy(compiled_model, tmp_path)
    found = recorded.usable(directory)
    assert found is not None
    assert (found.flavor, found.outputs, found.task, found.classes) == (
        "sklearn", ("predict", "predict_proba"), "binary", (0, 1))
    again = recorded.Recorded.read(directory)
    assert again is not None and again.to_json() == found.to_json()
    (directory / runtime.DIRECTORY / recorded.FILE).write_text("{not json")
    assert recorded.usable(directory) is None
