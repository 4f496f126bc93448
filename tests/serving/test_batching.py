"""Adaptive batching: merged predict calls, each caller gets its own rows back in order."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest
from tests.serving.conftest import fake_loader

from ctcd.serving import batching
from ctcd.serving.handlers import BatchConfig

pytestmark = pytest.mark.anyio


def _body(values: list[int], tag: str = "x") -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["a", "b"], "data": [[v, tag] for v in values]}}


async def test_each_caller_gets_its_rows_in_order(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.02))
    client = client_for(server)
    rng = random.Random(7)
    requests = [[rng.randrange(1000) for _ in range(rng.randrange(1, 6))] for _ in range(60)]
    responses = await asyncio.gather(*(client.post("/invocations", json=_body(values))
                                       for values in requests))
    for values, response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        assert response.json() == {"predictions": [v * 10 for v in values]}
    model = server.registry.get("1").model
    served = model.calls[1:]  # the first call is the warm-up
    assert sum(served) == sum(len(v) for v in requests)
    assert len(served) < len(requests)  # requests were merged
    assert max(served) > 5


async def test_batches_respect_max_rows(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.02),
                         batching=BatchConfig(max_rows=8))
    client = client_for(server)
    responses = await asyncio.gather(*(client.post("/invocations", json=_body([i, i]))
                                       for i in range(40)))
    assert all(r.json()["predictions"] == [i * 10, i * 10] for i, r in enumerate(responses))
    assert max(server.registry.get("1").model.calls[1:]) <= 8


async def test_max_wait_collects_more(make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(),
                         batching=BatchConfig(max_wait_ms=50))
    client = client_for(server)

    async def later(i: int) -> Any:
        await asyncio.sleep(i * 0.002)
        return await client.post("/invocations", json=_body([i]))

    responses = await asyncio.gather(*(later(i) for i in range(10)))
    assert [r.json()["predictions"] for r in responses] == [[i * 10] for i in range(10)]
    assert len(server.registry.get("1").model.calls[1:]) < 10


async def test_refused_request_does_not_fail_its_batch(make_server: Any,
                                                       client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.02))
    client = client_for(server)
    bodies = [_body([i], "refuse" if i == 5 else "x") for i in range(20)]
    responses = await asyncio.gather(*(client.post("/invocations", json=b) for b in bodies))
    for i, response in enumerate(responses):
        if i == 5:
            assert response.status_code == 422
            assert "refuse" in response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": [i * 10]}


async def test_model_crash_is_500_counted_on_the_version(make_server: Any,
                                                         client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader())
    client = client_for(server)
    response = await client.post("/invocations", json=_body([1], "crash"))
    assert response.status_code == 500
    rid = response.headers["x-request-id"]
    # a generic answer naming the correlation id: the exception's text stays in the log
    assert "crashed" not in response.json()["error"]
    assert rid in response.json()["error"]
    assert response.headers["x-model-version"] == "1"
    assert (await client.post("/invocations", json=_body([1]))).status_code == 200
    entry = server.registry.get("1").entry()
    assert (entry["requests"], entry["errors"]) == (2, 1)


async def test_batching_off_scores_each_request_alone(make_server: Any,
                                                      client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.01),
                         batching=BatchConfig(enabled=False))
    client = client_for(server)
    responses = await asyncio.gather(*(client.post("/invocations", json=_body([i]))
                                       for i in range(10)))
    assert [r.json()["predictions"] for r in responses] == [[i * 10] for i in range(10)]
    assert server.registry.get("1").model.calls[1:] == [1] * 10


async def test_real_model_batched_equals_unbatched(make_server: Any, client_for: Any,
                                                   churn_model: Any) -> None:
    import mlflow
    from tests.serving.conftest import records

    server = make_server(churn_model.name, {"1": churn_model.uri})
    client = client_for(server)
    rows = records(churn_model.example)
    want = mlflow.pyfunc.load_model(churn_model.uri).predict(churn_model.example).tolist()
    responses = await asyncio.gather(*(client.post("/invocations",
                                                   json={"dataframe_records": [row]})
                                       for row in rows))
    assert [r.json()["predictions"][0] for r in responses] == want


def _v2(values: list[int], outputs: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [
        {"name": "a", "shape": [len(values)], "datatype": "INT64", "data": values},
        {"name": "b", "shape": [len(values)], "datatype": "BYTES", "data": ["x"] * len(values)}]}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


async def test_predict_proba_requests_share_batches(make_server: Any, client_for: Any) -> None:
    """Requests for predict_proba, predict, or both merge into one batch; each output is
    computed once per batch, on every row of it."""
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.02, proba=True))
    client = client_for(server)
    kinds = [["predict_proba"], None, ["predict", "predict_proba"], ["predict"]]
    asked = [(list(range(i, i + 1 + i % 3)), kinds[i % 4]) for i in range(40)]
    responses = await asyncio.gather(*(client.post("/v2/models/fake/infer", json=_v2(v, o))
                                       for v, o in asked))
    for (values, outputs), response in zip(asked, responses, strict=True):
        assert response.status_code == 200, response.text
        got = {o["name"]: o for o in response.json()["outputs"]}
        assert list(got) == (outputs or ["predict"])
        if "predict" in got:
            assert got["predict"]["data"] == [v * 10 for v in values]
        if "predict_proba" in got:
            proba = got["predict_proba"]
            assert (proba["datatype"], proba["shape"]) == ("FP64", [len(values), 2])
            assert proba["data"] == [p for v in values for p in (1 - v / 1000, v / 1000)]
    model = server.registry.get("1").model
    wanting = sum(len(v) for v, o in asked if o and "predict_proba" in o)
    assert len(model.proba_calls) < sum(1 for _, o in asked if o and "predict_proba" in o)
    assert sum(model.proba_calls) >= wanting  # whole batches, not only the rows asking
    assert sum(model.calls[1:]) >= sum(len(v) for v, o in asked if not o or "predict" in o)
    assert len(model.calls[1:]) < 30  # predict merged as well


async def test_lone_predict_proba_request_calls_only_predict_proba(make_server: Any,
                                                                    client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(proba=True))
    client = client_for(server)
    response = await client.post("/v2/models/fake/infer", json=_v2([5, 6], ["predict_proba"]))
    assert response.status_code == 200, response.text
    model = server.registry.get("1").model
    assert (model.proba_calls, model.calls[1:]) == ([2], [])


async def test_refused_proba_request_does_not_fail_its_batch(make_server: Any,
                                                             client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.02, proba=True))
    client = client_for(server)
    bodies = []
    for i in range(12):
        body = _v2([i], ["predict", "predict_proba"] if i % 2 else None)
        if i == 5:
            body["inputs"][1]["data"] = ["refuse"]
        bodies.append(body)
    responses = await asyncio.gather(*(client.post("/v2/models/fake/infer", json=b)
                                       for b in bodies))
    for i, response in enumerate(responses):
        if i == 5:
            assert response.status_code == 422, response.text
            assert "refuse" in response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [i * 10]


def test_predict_runs_with_one_native_thread_unless_told_otherwise() -> None:
    """OpenMP's thread count belongs to the calling thread: the predict thread sets its own
    (``--threads``, 1 by default); 0 leaves the libraries' default (one per core)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import sklearn.ensemble  # noqa: F401 - loads scikit-learn's OpenMP runtime
    from threadpoolctl import threadpool_info, threadpool_limits

    from ctcd.serving.batching import Batcher

    def native(threads: int) -> dict[str, int]:
        batcher = Batcher(object(), threads=threads)  # type: ignore[arg-type]
        try:
            info = batcher._executor.submit(threadpool_info).result()
        finally:
            batcher.close()
        return {i["internal_api"]: i["num_threads"] for i in info}

    with ThreadPoolExecutor(1) as plain:  # what any new thread gets
        default = {i["internal_api"]: i["num_threads"]
                   for i in plain.submit(threadpool_info).result()}
    try:
        limited = native(1)
        assert "openmp" in limited and set(limited.values()) == {1}
        # (BLAS's limit is the whole process's: the server's predict thread is its only user)
        assert native(0)["openmp"] == default["openmp"]
        assert default["openmp"] == len(os.sched_getaffinity(0)) > 1 or \
            "OMP_NUM_THREADS" in os.environ
    finally:
        threadpool_limits(limits=default.get("openblas"), user_api="blas")


class _Where:
    """Which thread each predict call of a fake model ran on, and its rows."""

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, []
        predict = model.predict

        def recorded(data: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((threading.current_thread().name, len(data)))
            return predict(data, *args, **kwargs)

        model.predict = recorded


async def test_fast_batches_are_predicted_on_the_event_loop(
        make_server: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch no larger than one measured to predict within INLINE_S runs on the loop's
    thread (no hand-off to the predict thread and back); a larger one goes to the predict
    thread until it too is measured fast."""
    monkeypatch.setattr(batching, "INLINE_S", 0.05)  # the fake is fast, whatever the machine
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader())
    where = _Where(server.registry.get("1").model)
    client = client_for(server)
    loop_thread = threading.current_thread().name
    for values in ([1], [2], [3], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [4]):
        response = await client.post("/invocations", json=_body(values))
        assert response.json() == {"predictions": [v * 10 for v in values]}
    threads = [(name == loop_thread, rows) for name, rows in where.calls]
    assert threads == [(False, 1), (True, 1), (True, 1), (False, 5), (True, 5), (True, 1)]


async def test_a_batch_slower_than_inline_goes_back_to_the_predict_thread(
        make_server: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "INLINE_S", 0.05)
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader())
    model = server.registry.get("1").model
    where = _Where(model)
    client = client_for(server)
    loop_thread = threading.current_thread().name
    for delay in (0.0, 0.0, 0.08, 0.08, 0.0, 0.0):  # the model slows down, then recovers
        model.delay = delay
        assert (await client.post("/invocations", json=_body([1]))).status_code == 200
    on_loop = [name == loop_thread for name, _ in where.calls]
    # measured fast in the thread, then inline; the slow inline call sends the next one to
    # the thread, which measures it slow again; fast once more, it comes back to the loop
    assert on_loop == [False, True, True, False, False, True]


async def test_a_slow_model_is_never_predicted_on_the_event_loop(
        make_server: Any, client_for: Any) -> None:
    server = make_server("fake", {"1": "fake://v1"}, loader=fake_loader(delay=0.002))
    where = _Where(server.registry.get("1").model)
    client = client_for(server)
    loop_thread = threading.current_thread().name
    responses = await asyncio.gather(*(client.post("/invocations", json=_body([i]))
                                       for i in range(30)))
    assert all(r.status_code == 200 for r in responses)
    assert where.calls and all(name != loop_thread for name, _ in where.calls)
