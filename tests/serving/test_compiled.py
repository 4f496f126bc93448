"""A live model server answering with a version's verified compiled model (ONNX Runtime):
both REST protocols and V2 over gRPC, ``predict`` and ``predict_proba`` equal to the
original pipeline, the same input checks, the runtime in the headers and the metadata; and
the same server told ``--no-compiled`` answering with scikit-learn.

The model is a scikit-learn pipeline (a string category one-hot encoded, numbers scaled, a
forest) saved as an MLflow model directory, compiled by :func:`compile_loaded` and written
beside it as ``ctcd models compile`` logs it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tests.serving.conftest import grpc_stub, live_server, plans_frame, plans_rows, typed_request
from tests.serving.v2_inputs import v2_columns

from ctcd.serving import compiled as runtime
from ctcd.serving.model import load
from ctcd.serving.recorded import FILE as RECORDED
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.e2e
@pytest.fixture(scope="module")
def live(compiled_model: Any) -> Iterator[Any]:
    port = free_port()
    with live_server("--model-uri", str(compiled_model.directory), "--model-name", "plans",
                     "--model-version", "1", "--grpc-port", str(port)) as url:
        _wait_compiled(url)
        yield type("Live", (), {"url": url, "grpc": f"127.0.0.1:{port}"})


def _wait_compiled(url: str) -> dict[str, Any]:
    """The version's metadata once its compiled model is no longer pending and its original
    no longer loading (the server does either in the background once ready)."""
    deadline = time.monotonic() + 60
    while True:
        parameters = httpx.get(f"{url}/v2/models/plans", timeout=10).json()["parameters"]
        settled = parameters["compiled"] != "pending" and "original" not in parameters
        if settled or time.monotonic() > deadline:
            return dict(parameters)
        time.sleep(0.05)


def test_rest_answers_with_onnx_runtime_as_the_pipeline_does(live: Any,
                                                             compiled_model: Any) -> None:
    rows = plans_rows()
    pipeline = compiled_model.pipeline
    split = {"dataframe_split": {"columns": list(rows.columns),
                                 "data": rows.astype(object).values.tolist()}}
    response = httpx.post(f"{live.url}/invocations", json=split, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-runtime"] == "onnxruntime"
    assert response.json()["predictions"] == pipeline.predict(rows).tolist()

    v2 = httpx.post(f"{live.url}/v2/models/plans/infer", timeout=30, json={
        "inputs": v2_columns(rows), "outputs": [{"name": "predict_proba"}]})
    assert v2.status_code == 200, v2.text
    assert v2.headers["x-model-runtime"] == "onnxruntime"
    (output,) = v2.json()["outputs"]
    got = np.asarray(output["data"]).reshape(output["shape"])
    np.testing.assert_allclose(got, pipeline.predict_proba(rows), atol=runtime.ATOL, rtol=0)

    meta = httpx.get(f"{live.url}/v2/models/plans", timeout=10).json()
    assert meta["parameters"]["runtime"] == "onnxruntime"
    assert meta["parameters"]["compiled"] == "verified"
    assert "equal on" in meta["parameters"]["compiled_reason"]


def test_input_checks_are_the_same_for_a_compiled_model(live: Any) -> None:
    rows = plans_rows().drop(columns=["usage"])
    response = httpx.post(f"{live.url}/invocations", timeout=30, json={"dataframe_split": {
        "columns": list(rows.columns), "data": rows.astype(object).values.tolist()}})
    assert response.status_code == 400, response.text
    assert "usage" in response.text
    wrong = httpx.post(f"{live.url}/invocations", timeout=30, json={"dataframe_records": [
        {"plan": "basic", "usage": "lots", "tenure": 3.0}]})
    assert wrong.status_code == 400, wrong.text
    assert "usage" in wrong.text


def test_grpc_answers_with_the_compiled_model(live: Any, compiled_model: Any) -> None:
    rows = plans_rows()
    inputs = []
    for name in rows.columns:
        values = rows[name].to_numpy()
        datatype = "FP64" if values.dtype.kind == "f" else "BYTES"
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values.astype(object) if datatype == "BYTES" else values)
        inputs.append(tensor)
    client = triton.InferenceServerClient(live.grpc)
    try:
        result = client.infer("plans", inputs, outputs=[
            triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")])
    finally:
        client.close()
    pipeline = compiled_model.pipeline
    assert result.as_numpy("predict").tolist() == pipeline.predict(rows).tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"), pipeline.predict_proba(rows),
                               atol=runtime.ATOL, rtol=0)
    pb, stub, channel = grpc_stub(live)  # what answered: in the trailing metadata
    with channel:
        _, call = stub.ModelInfer.with_call(typed_request(pb, "plans", rows))
    assert dict(call.trailing_metadata())["x-model-runtime"] == "onnxruntime"


def test_the_server_answers_before_its_compiled_model_opens_and_switches_cleanly(
        compiled_model: Any, tmp_path: Path) -> None:
    """A version compiled without the original's recorded answers (before they were kept):
    the server is ready without waiting for ONNX Runtime, and requests sent from the moment
    it listens are all answered correctly, by scikit-learn until the graph is verified
    again and by ONNX Runtime from then on, never back."""
    directory = tmp_path / "model"
    shutil.copytree(compiled_model.directory, directory)
    (directory / runtime.DIRECTORY / RECORDED).unlink()
    rows = plans_rows()
    body = {"dataframe_split": {"columns": list(rows.columns),
                                "data": rows.astype(object).values.tolist()}}
    expected = compiled_model.pipeline.predict(rows).tolist()
    runtimes: list[str] = []
    with live_server("--model-uri", str(directory), "--model-name", "plans",
                     "--model-version", "1") as url, httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 60
        while runtimes.count("onnxruntime") < 20 and time.monotonic() < deadline:
            response = client.post(f"{url}/invocations", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == expected
            runtimes.append(response.headers["x-model-runtime"])
        parameters = _wait_compiled(url)
    assert set(runtimes) <= {"sklearn", "onnxruntime"}, set(runtimes)
    switched = runtimes.index("onnxruntime")  # ValueError: the graph never took over
    assert set(runtimes[switched:]) == {"onnxruntime"}, runtimes
    assert (parameters["runtime"], parameters["compiled"]) == ("onnxruntime", "verified")


def test_warm_can_leave_the_compiled_model_for_later(compiled_model: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``warm(compiled_later=True)``: the original answers and says the graph is pending;
    ``open_compiled`` verifies it again and it answers from the next call. A failure while
    opening leaves the original answering, with the reason. A version with no graph is
    never pending."""
    rows = plans_rows()
    expected = compiled_model.pipeline.predict(rows).tolist()
    model = load(str(compiled_model.directory))
    model.warm(compiled_later=True)
    assert (model.runtime, model.compiled_view()["compiled"]) == ("sklearn", "pending")
    assert model.predict(rows).tolist() == expected
    model.open_compiled()
    assert (model.runtime, model.compiled_view()["compiled"]) == ("onnxruntime", "verified")
    assert model.predict(rows).tolist() == expected

    plain = tmp_path / "model"
    shutil.copytree(compiled_model.directory, plain,
                    ignore=shutil.ignore_patterns(runtime.DIRECTORY))
    never = load(str(plain))
    never.warm(compiled_later=True)
    view = never.compiled_view()
    assert (never.runtime, view["compiled"]) == ("sklearn", "none")
    assert "no compiled model logged" in view["compiled_reason"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("session could not be created")

    monkeypatch.setattr(runtime, "open_verified", broken)
    failing = load(str(compiled_model.directory))
    failing.warm(compiled_later=True)
    failing.open_compiled()
    view = failing.compiled_view()
    assert (failing.runtime, view["compiled"]) == ("sklearn", "failed")
    assert "RuntimeError: session could not be created" in view["compiled_reason"]
    assert failing.predict(rows).tolist() == expected
    failing.open_compiled()  # nothing left to open: a second call changes nothing
    assert failing.compiled_view()["compiled"] == "failed"


def test_no_compiled_serves_the_original_and_says_so(compiled_model: Any) -> None:
    rows = plans_rows()
    with live_server("--model-uri", str(compiled_model.directory), "--model-name", "plans",
                     "--model-version", "1", "--no-compiled") as url:
        response = httpx.post(f"{url}/invocations", timeout=30, json={"dataframe_split": {
            "columns": list(rows.columns), "data": rows.astype(object).values.tolist()}})
        meta = httpx.get(f"{url}/v2/models/plans", timeout=10).json()
    assert response.status_code == 200, response.text
    assert response.headers["x-model-runtime"] == "sklearn"
    assert response.json()["predictions"] == compiled_model.pipeline.predict(rows).tolist()
    assert (meta["parameters"]["runtime"], meta["parameters"]["compiled"]) == ("sklearn", "off")


def test_a_large_table_is_answered_in_slices_as_in_one_call(
        compiled_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scoring job's chunk goes to ONNX Runtime in slices (bounded intermediate tensors):
    the answers are those of one call over the whole table, in order."""
    rows = 2 * runtime.RUN_ROWS + 7
    frame = plans_frame(rows, 3)
    model = runtime.CompiledModel.open(compiled_model.directory, threads=2)
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    calls: list[int] = []
    run = model._run
    model._run = lambda names, feeds: calls.append(len(feeds["plan"])) or run(names, feeds)
    sliced = model.run_frame(frame, ("predict", "predict_proba"))
    assert calls == [runtime.RUN_ROWS, runtime.RUN_ROWS, 7]
    monkeypatch.setattr(runtime, "RUN_ROWS", rows)
    whole = model.run_frame(frame, ("predict", "predict_proba"))
    assert calls[3:] == [rows]
    assert np.array_equal(sliced["predict"], whole["predict"])
    # threads add the trees in float32 in another order for another batch size: the last
    # bits may differ (3.6e-7 here), far within the tolerance the graph was verified to
    np.testing.assert_allclose(sliced["predict_proba"], whole["predict_proba"],
                               atol=runtime.ATOL, rtol=0)
    assert sliced["predict"].tolist() == compiled_model.pipeline.predict(frame).tolist()
    np.testing.assert_allclose(sliced["predict_proba"],
                               compiled_model.pipeline.predict_proba(frame), atol=runtime.ATOL,
                               rtol=0)


def test_scoring_jobs_thread_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files scored in process use every core by default; streaming scorers one thread;
    both are settings, and a value that is not a number falls back to the default."""
    monkeypatch.delenv("CTCD_COMPILED_BATCH_THREADS", raising=False)
    monkeypatch.delenv("CTCD_COMPILED_THREADS", raising=False)
    assert runtime.batch_threads_by_env() == runtime.cores() == len(os.sched_getaffinity(0))
    assert runtime.threads_by_env() == 1
    monkeypatch.setenv("CTCD_COMPILED_BATCH_THREADS", "1")
    monkeypatch.setenv("CTCD_COMPILED_THREADS", "3")
    assert (runtime.batch_threads_by_env(), runtime.threads_by_env()) == (1, 3)
    monkeypatch.setenv("CTCD_COMPILED_BATCH_THREADS", "many")
    assert runtime.batch_threads_by_env() == runtime.cores()


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2: 2 CPUs
    ({"cpu.max": "50000 100000\n"}, 1),  # half a CPU: still one thread
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
    ({"cpu.max": "garbage\n"}, None),
])
def test_a_containers_cpu_quota_bounds_the_cores(tmp_path: Path, files: dict[str, str],
                                                 expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert runtime.cpu_quota(tmp_path) == expected
    affinity = len(os.sched_getaffinity(0))
    assert runtime.cores(tmp_path) == min(affinity, expected or affinity)
