"""Compiling every model type the project trains: converted, verified equal to the original
on its holdout rows (labels identical, values within the stated tolerance), then loaded the
way the model server and scoring jobs load it and compared again; edge rows (an unseen
category, extreme values, missing optional values); a model that does not convert is served
as it is with the reason shown; a tampered graph is refused at load."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from tests.compiled.conftest import BENCH, SHIPPED, Trained
from tests.flavored_models import FlavoredFactory

from ctcd.batch.chunk import predict_isolating
from ctcd.batch.model import load_version
from ctcd.compiled.version import Outcome, compile_loaded, compile_version, verification_rows
from ctcd.serving import compiled as runtime
from ctcd.serving.compiled import ATOL, compare
from ctcd.serving.model import LoadedModel, load
from ctcd.serving.schema import Table
from ctcd.tracking import Tracking

pytestmark = pytest.mark.e2e


def _original(uri: str) -> LoadedModel:
    model = load(uri, compiled=False)
    model.warm()
    return model


def _write(outcome: Outcome, directory: Path) -> Path:
    target = directory / runtime.DIRECTORY
    target.mkdir(parents=True, exist_ok=True)
    assert outcome.graph is not None
    for name, content in outcome.files().items():
        (target / name).write_bytes(content)
    return directory


def _compiled_copy(model: LoadedModel, outcome: Outcome, tmp_path: Path) -> Path:
    """The model's directory with the compiled graph beside it, as compile_version logs it."""
    directory = tmp_path / "model"
    shutil.copytree(model.local_path, directory)
    return _write(outcome, directory)


def _answers(model: LoadedModel, table: Table) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in
            model.predict_table(table, outputs=model.output_names).items()}


@pytest.mark.parametrize("kind", [*SHIPPED, *BENCH])
def test_every_model_type_compiles_and_answers_as_the_original_on_its_holdout(
        kind: str, trained: dict[str, Trained], tmp_path: Path) -> None:
    model = trained[kind]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    manifest = outcome.manifest
    assert manifest.verified, manifest.reason
    assert manifest.rows >= len(model.holdout)
    assert manifest.max_abs_diff <= ATOL * 10  # within ATOL + RTOL*|value| (regressions)
    assert manifest.speedup["1 row"] > 1

    directory = _compiled_copy(original, outcome, tmp_path)
    served = load(str(directory))
    served.warm()
    # used where it was measured faster at both sizes (1 row, all rows), else kept unused
    used = manifest.faster
    assert (served.runtime, served.compiled_view()["compiled"]) == (
        ("onnxruntime", "verified") if used else (original.runtime, "slower")), manifest.speedup
    table = verification_rows(original, model.holdout)
    graph = runtime.CompiledModel.open(directory)
    expected = _answers(original, table)
    for got in (_answers(served, table), graph.run(table, original.output_names)):
        result = compare(expected, got, table.rows)
        assert result.equal, result.describe()
        assert got["predict"].dtype == expected["predict"].dtype
        if model.task != "regression":
            assert np.array_equal(got["predict"], expected["predict"])
            assert set(got) == {"predict", "predict_proba"}
    _graph_first(original, directory, used, table)


def _graph_first(original: LoadedModel, directory: Path, used: bool, table: Table) -> None:
    """A graph in use recorded the original's answers: loaded for a server starting up, it
    answers before the original is loaded and says what the original would (task, classes,
    outputs); the original loaded behind it answers the same. A graph not used recorded
    nothing, and the original is loaded first."""
    first = load(str(directory), original_later=True)
    assert (first.native is None) == used
    if not used:
        return
    first.warm(compiled_later=True)
    assert (first.runtime, first.task, first.classes, first.output_names) == (
        "onnxruntime", original.task, original.classes, original.output_names)
    assert first.compiled_view()["original"] == "loading"
    first.open_compiled()
    view = first.compiled_view()
    assert (first.runtime, view["compiled"], first.native is not None) == (
        "onnxruntime", "verified", True), view
    assert "verified again at load against the original" in view["compiled_reason"]
    result = compare(_answers(original, table), _answers(first, table), table.rows)
    assert result.equal, result.describe()


def test_a_graph_not_faster_at_every_size_is_kept_but_not_used(
        trained: dict[str, Trained], tmp_path: Path) -> None:
    """Verified equal but measured slower at all the verification rows: the tag and the
    server's metadata say ``slower`` and where, and the original model answers."""
    model = trained["bench-random_forest"]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    rows = f"{outcome.manifest.rows} rows"
    slower = Outcome(dataclasses.replace(outcome.manifest,
                                         speedup={"1 row": 50.0, rows: 0.6}), outcome.graph)
    tags = slower.tags()
    assert tags["ctcd.compiled"] == "slower"
    assert f"not faster than the original at {rows} x0.6" in tags["ctcd.compiled.reason"]

    served = load(str(_compiled_copy(original, slower, tmp_path)))
    served.warm()
    view = served.compiled_view()
    assert (served.runtime, view["compiled"]) == ("sklearn", "slower")
    assert f"{rows} x0.6" in view["compiled_reason"]
    assert served.compiled is None


def test_edge_rows_answer_as_the_original(trained: dict[str, Trained], tmp_path: Path) -> None:
    """The churn pipeline (string categories and scaling inside the graph): a category it
    never saw, values far outside the training range, missing numbers and categories."""
    model = trained["churn"]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    assert outcome.manifest.verified, outcome.manifest.reason
    served = load(str(_compiled_copy(original, outcome, tmp_path)))
    served.warm()
    assert served.runtime == "onnxruntime"

    rows = model.holdout.head(12).copy()
    arrays = {c: np.array(rows[c], dtype=object if rows[c].dtype.kind not in "if"
                          else "float64") for c in rows.columns}
    arrays["contract"][0] = "satellite"  # unseen in training
    arrays["region"][1] = "antarctica"
    arrays["contract"][2] = None  # missing category
    arrays["payment_method"][3] = None
    arrays["tenure_months"][4] = np.nan  # missing numbers
    arrays["monthly_charges"][5] = np.nan
    arrays["total_charges"][6] = 1e12  # far outside what it was trained on
    arrays["data_usage_gb"][7] = -1e9
    arrays["age"][8] = 0.0
    arrays["monthly_charges"][9] = np.finfo(np.float64).max / 1e10
    table = Table(arrays, len(rows))
    expected, got = _answers(original, table), _answers(served, table)
    result = compare(expected, got, table.rows)
    assert result.equal, result.describe()
    assert np.array_equal(got["predict"], expected["predict"])


def test_a_tampered_graph_is_refused_at_load(trained: dict[str, Trained],
                                             tmp_path: Path) -> None:
    """A graph altered after verification (its leaves' values changed) is refused when
    loaded, and the original model serves: by its digest, and with the manifest's digest
    altered too, because it answers differently on the input example."""
    model = trained["bench-random_forest"]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    assert outcome.manifest.verified, outcome.manifest.reason
    directory = _compiled_copy(original, outcome, tmp_path)
    graph_path = directory / runtime.DIRECTORY / runtime.GRAPH
    graph = onnx.load(graph_path)
    for node in graph.graph.node:
        for attribute in node.attribute:
            if attribute.name == "class_weights":
                attribute.floats[:] = [1.0 - w for w in attribute.floats]
    onnx.save(graph, graph_path)

    served = load(str(directory))
    served.warm()
    view = served.compiled_view()
    assert (served.runtime, view["compiled"]) == ("sklearn", "refused")
    assert "sha256 differs" in view["compiled_reason"]

    manifest_path = directory / runtime.DIRECTORY / runtime.MANIFEST
    manifest = json.loads(manifest_path.read_bytes())
    manifest["sha256"] = runtime.digest(graph_path.read_bytes())
    manifest_path.write_text(json.dumps(manifest))
    served = load(str(directory))
    served.warm()
    view = served.compiled_view()
    assert (served.runtime, view["compiled"]) == ("sklearn", "refused")
    assert "re-verification at load failed" in view["compiled_reason"]
    example = original.example
    assert example is not None
    assert np.array_equal(served.predict_table(example), original.predict_table(example))


def test_a_model_that_does_not_convert_is_served_uncompiled_with_the_reason(
        flavored_model: FlavoredFactory, mlflow_server: str) -> None:
    """An XGBoost model with a native category column has no converter: the version is
    tagged with the reason, and a server loading it answers with XGBoost and says why."""
    from mlflow import MlflowClient

    model = flavored_model("xgboost-binary")
    outcome = compile_version(model.name, model.version, tracking=Tracking(mlflow_server))
    assert not outcome.manifest.verified
    assert "categorical" in outcome.manifest.reason
    tags = MlflowClient(mlflow_server).get_model_version(model.name, model.version).tags
    assert tags["ctcd.compiled"] == "failed"
    assert "categorical" in tags["ctcd.compiled.reason"]

    served = load(model.uri)
    served.warm()
    view = served.compiled_view()
    assert (served.runtime, view["compiled"]) == ("xgboost", "failed")
    assert "categorical" in view["compiled_reason"]


def test_compile_version_logs_the_graph_beside_the_model_and_tags_it(
        trained: dict[str, Trained], mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered, then compiled on demand against rows given: the graph and manifest are
    in the model's own artifact directory, so loading the version brings and uses them, in
    the model server and in scoring jobs."""
    import mlflow
    from mlflow import MlflowClient

    model = trained["bench-random_forest"]  # faster compiled at every size, by far
    mlflow.set_tracking_uri(mlflow_server)
    registered = mlflow.register_model(model.uri, "compiled-forest")
    version = str(registered.version)
    outcome = compile_version("compiled-forest", version, tracking=Tracking(mlflow_server),
                              rows=model.holdout)
    assert outcome.manifest.verified, outcome.manifest.reason
    tags = MlflowClient(mlflow_server).get_model_version("compiled-forest", version).tags
    assert tags["ctcd.compiled"] == "verified"
    assert "onnxruntime" in tags["ctcd.compiled.runtime"]
    assert "1 row x" in tags["ctcd.compiled.speedup"]

    served = load(f"models:/compiled-forest/{version}")
    served.warm()
    assert served.runtime == "onnxruntime"
    first = load(f"models:/compiled-forest/{version}", original_later=True)
    assert first.native is None and first.recorded is not None  # recorded.json came along
    first.close()
    original = load(f"models:/compiled-forest/{version}", compiled=False)
    original.warm()
    table = verification_rows(original, model.holdout)
    assert np.array_equal(served.predict_table(table), original.predict_table(table))
    frame = pd.DataFrame(model.holdout.head(3))
    assert np.array_equal(served.predict(frame), original.predict(frame))

    # batch scoring and the streaming scorers load a version this way
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    scoring = load_version("compiled-forest", version)
    assert scoring.model.runtime == "onnxruntime"
    assert _threads(scoring) == 1  # a streaming scorer's small batches: one thread
    files = load_version("compiled-forest", version, batch=True)  # ctcd predict, batch DAG
    assert _threads(files) == runtime.cores()
    assert np.array_equal(predict_isolating(files, table)[0]["prediction"],
                          original.predict_table(table))
    columns, refused = predict_isolating(scoring, table)
    assert not refused
    assert np.array_equal(columns["prediction"], original.predict_table(table))


def _threads(scoring: Any) -> int:
    compiled = scoring.model.compiled
    assert compiled is not None
    return int(compiled.session.get_session_options().intra_op_num_threads)
