"""Fixtures of the model-server tests: real registered models loaded once per session,
in-process servers over httpx's ASGI transport, and the one fake model."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ctcd import reaper
from ctcd.compiled.version import compile_loaded
from ctcd.serving import compiled as runtime
from ctcd.serving.errors import ModelLoadError, ModelRejectedInput
from ctcd.serving.handlers import BatchConfig, ModelServer
from ctcd.serving.model import LoadedModel, load
from ctcd.serving.rest import AppConfig, create_app
from ctcd.serving.schema import ColumnSpec, InputSchema, Table

_LOADED: dict[str, LoadedModel] = {}
_LOCK = threading.Lock()


def cached_load(uri: str) -> Any:
    """Load each model URI once per session (servers share the loaded model)."""
    with _LOCK:
        if uri not in _LOADED:
            _LOADED[uri] = load(uri)
        return _LOADED[uri]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def numeric_model(mlflow_server: str) -> Any:
    """A LogisticRegression on 20 numeric features (columns f0..f19), registered."""
    import mlflow
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from ctcd.training.model import log_model

    x, y = make_classification(n_samples=500, n_features=20, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    pipeline = LogisticRegression(max_iter=200).fit(frame, y)
    mlflow.set_experiment("ctcd-serving-tests")
    with mlflow.start_run():
        info = log_model(pipeline, frame.head(5), registered_model_name="numeric-serving")
    uri = f"models:/numeric-serving/{info.registered_model_version}"
    return type("Numeric", (), {"uri": uri, "version": str(info.registered_model_version),
                                "name": "numeric-serving", "example": frame.head(30)})


@pytest.fixture(scope="session")
def churn_versions(model_factory: Any, churn_model: Any) -> tuple[Any, Any]:
    """Two versions of one model that answer differently (for swap / canary)."""
    first = model_factory(name="churn-swap", kind="hist_gradient_boosting")
    second = model_factory(name="churn-swap", kind="logistic_regression")
    return first, second


ServerFactory = Callable[..., ModelServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    made: list[ModelServer] = []

    def make(name: str, versions: dict[str, str], *, loader: Callable[[str], Any] = cached_load,
             batching: BatchConfig | None = None, sink: Any = None) -> ModelServer:
        server = ModelServer(name, loader=loader, batching=batching, sink=sink)
        for i, (version, uri) in enumerate(versions.items()):
            server.install(version, server.load_blocking(uri), weight=1.0 if i == 0 else 0.0)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[httpx.AsyncClient] = []

    def make(server: ModelServer, config: AppConfig | None = None) -> httpx.AsyncClient:
        app = create_app(server, config)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://model", timeout=60)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


HANG = threading.Event()  # a model with "hang" in its URI waits for this once warm


class FakeModel:
    """A model over columns ``a`` (long) and ``b`` (string) whose prediction of a row is
    ``a * 10``; rows with ``b == "refuse"`` are refused (a 4xx), ``b == "crash"`` raise.
    ``delay`` makes each predict slow so that concurrent requests queue and merge.

    Once warm, its URI may change it (shadow tests): ``scale=N`` predicts ``a * N``,
    ``raise`` raises on every call, ``hang`` waits for :data:`HANG`, ``slow=S`` sleeps S
    seconds per call."""

    def __init__(self, delay: float = 0.0, uri: str = "fake://model", *,
                 proba: bool = False) -> None:
        self.uri = uri
        self.warmed = False
        self.task: str | None = None
        self.scale = int(uri.partition("scale=")[2].split("&")[0] or 10)
        slow = uri.partition("slow=")[2].split("&")[0]
        if slow:
            delay = float(slow)
        self.schema: InputSchema | None = InputSchema(
            columns=(ColumnSpec("a", "long"), ColumnSpec("b", "string")))
        self.example = None
        self.delay = delay
        self.calls: list[int] = []
        self.proba_calls: list[int] = []  # rows of each predict_proba call
        self.row_aligned = True
        # with ``proba``: a classifier whose predict_proba of a row is [1 - a/1000, a/1000]
        self.extra_outputs: dict[str, Any] = {"predict_proba": (self._proba, 2)} if proba else {}
        self.output_names = ("predict", *self.extra_outputs)

    def _proba(self, frame: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        self.proba_calls.append(len(frame))
        share = frame["a"].to_numpy() * self.scale / 10_000
        return np.column_stack([1 - share, share])

    def predict(self, data: Any, params: Any = None, outputs: tuple[str, ...] = ()) -> Any:
        if outputs:
            return {name: self._proba(data) if name == "predict_proba"
                    else self.predict(data, params) for name in outputs}
        if self.delay:
            time.sleep(self.delay)
        frame = data
        self.calls.append(len(frame))
        if self.warmed and "raise" in self.uri:
            raise RuntimeError("this version raises on every call")
        if self.warmed and "hang" in self.uri:
            HANG.wait()
        if (frame["b"] == "refuse").any():
            raise ModelRejectedInput("b is 'refuse'")
        if (frame["b"] == "crash").any():
            raise RuntimeError("the model crashed")
        return frame["a"].to_numpy() * self.scale

    def predict_table(self, table: Table, params: Any = None,
                      outputs: tuple[str, ...] = ()) -> Any:
        return self.predict(table.to_model_input(), params, outputs)

    runtime = "fake"

    def compiled_view(self) -> dict[str, str]:
        return {"runtime": self.runtime}

    def close(self) -> None:
        self.closed = True

    def warm(self, *, compiled_later: bool = False) -> None:  # it has no compiled model
        if self.uri.endswith("broken"):
            raise ModelLoadError(self.uri, "warm-up prediction failed: broken on purpose")
        assert self.schema is not None
        self.predict_table(self.schema.synthetic_rows())
        self.warmed = True


def fake_loader(delay: float = 0.0, *, proba: bool = False) -> Callable[[str], FakeModel]:
    def loader(uri: str) -> FakeModel:
        if uri.startswith("missing"):
            raise ModelLoadError(uri, "no such model")
        return FakeModel(delay, uri, proba=proba)

    return loader


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records (numpy scalars to Python)."""
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


READY_LINE = re.compile(r"^ctcd model server listening on http://127\.0\.0\.1:(\d+)$")


@contextlib.contextmanager
def live_server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``python -m ctcd.serving`` process on a free loopback port; yields its URL
    once it announces it listens, stops it (SIGTERM) after."""
    proc = subprocess.Popen([sys.executable, "-m", "ctcd.serving", "--host", "127.0.0.1",
                             "--port", "0", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reaper.watch(proc.pid)  # stopped with the session, even a killed one
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()  # blocks until loaded and listening
        match = READY_LINE.match(line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def grpc_stub(live: Any) -> tuple[Any, Any, grpc.Channel]:
    """The Open Inference Protocol's messages, a stub on ``live.grpc`` and its channel."""
    channel = grpc.insecure_channel(live.grpc)
    return service_pb2, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel


def typed_request(pb: Any, name: str, frame: Any) -> Any:
    """A ModelInferRequest of ``frame``'s columns in typed contents (BYTES, INT64, FP64)."""
    request = pb.ModelInferRequest(model_name=name, id="typed")
    for column in frame.columns:
        values = frame[column].tolist()
        tensor = request.inputs.add(name=column, shape=[len(values)])
        if isinstance(values[0], str):
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        elif isinstance(values[0], int):
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.extend(values)
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.extend(values)
    return request


PLANS = ("basic", "plus", "pro")


def plans_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"plan": rng.choice(PLANS, rows).astype(object),
                         "usage": rng.gamma(2.0, 10.0, rows),
                         "tenure": rng.integers(0, 72, rows).astype("float64")})


@pytest.fixture(scope="session")
def compiled_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A plan-churn pipeline saved as an MLflow model directory, compiled by
    :func:`compile_loaded` and written beside it as ``ctcd models compile`` logs it:
    the graph, its manifest and the original's recorded answers."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = plans_frame(1500, 0)
    target = ((train["usage"] > 20) ^ (train["plan"] == "pro")).astype(int)
    pipeline = Pipeline([
        ("prep", ColumnTransformer([
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", StandardScaler(), ["usage", "tenure"])])),
        ("forest", RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0)),
    ]).fit(train, target)
    directory = tmp_path_factory.mktemp("compiled") / "model"
    mlflow.sklearn.save_model(
        pipeline, directory, input_example=train.head(5), serialization_format="skops",
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
        signature=infer_signature(train.head(20), pipeline.predict(train.head(20))))
    original = load(str(directory), compiled=False)
    original.warm()
    outcome = compile_loaded(original, plans_frame(500, 1))
    original.close()
    assert outcome.manifest.verified, outcome.manifest.reason
    assert outcome.graph is not None
    assert outcome.recorded is not None
    (directory / runtime.DIRECTORY).mkdir()
    for name, content in outcome.files().items():
        (directory / runtime.DIRECTORY / name).write_bytes(content)
    return type("Compiled", (), {"directory": directory, "pipeline": pipeline})


def plans_rows() -> pd.DataFrame:
    rows = plans_frame(40, 2)
    rows.loc[0, "plan"] = "enterprise"  # a category never seen in training
    rows.loc[1, "usage"] = 1e9  # far outside the training range
    rows.loc[2, "tenure"] = -5.0
    return rows
