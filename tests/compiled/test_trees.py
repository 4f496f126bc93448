"""Batch scoring's tree library: built beside the verified graph of a HistGradientBoosting
model (the churn pipeline with string categories; a bare multiclass classifier; a
regressor), verified equal to the original on the holdout rows and edge rows, used by
scoring jobs only; not built for other models or without a compiler, with the reason; a
tampered library, or one built for another platform, is refused at load and the graph
answers instead. gcc builds the libraries here, as it does on the machines that register
models."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.compiled.conftest import Trained

from ctcd.batch.model import load_version
from ctcd.compiled import trees as trees_build
from ctcd.compiled.version import Outcome, compile_loaded, compile_version, verification_rows
from ctcd.serving import compiled as runtime
from ctcd.serving import trees as library
from ctcd.serving.compiled import compare
from ctcd.serving.model import LoadedModel, load
from ctcd.serving.schema import Table
from ctcd.tracking import Tracking

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gradient_boosted(mlflow_server: str) -> dict[str, Trained]:
    """Bare HistGradientBoosting models on numbers: a 3-class classifier and a regressor."""
    import mlflow
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from ctcd.training.flavors import log_fitted

    x, y = make_classification(n_samples=3000, n_features=12, n_informative=6, n_classes=3,
                               random_state=1)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)])
    frame.iloc[::17, 3] = np.nan  # missing values, routed as HistGradientBoosting learnt
    train, holdout = frame.iloc[:2200], frame.iloc[2200:].reset_index(drop=True)
    target = x[:, :6] @ np.linspace(1.0, 3.0, 6)
    fitted = {
        "multiclass": (HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(
            train, y[:2200]), {"task": "multiclass", "classes": [0, 1, 2]}),
        "regression": (HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(
            train, target[:2200]), {"task": "regression"}),
    }
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-trees-tests")
    models = {}
    for kind, (model, metadata) in fitted.items():
        with mlflow.start_run(run_name=f"trees-{kind}"):
            info = log_fitted(model, train.head(5), metadata=metadata)
        models[kind] = Trained(kind, info.model_uri, holdout, str(metadata["task"]))
    return models


def _original(uri: str) -> LoadedModel:
    model = load(uri, compiled=False)
    model.warm()
    return model


def _copy(original: LoadedModel, outcome: Outcome, tmp_path: Path, *,
          speedup: float | None = 2.0) -> Path:
    """The model's directory with everything compile_version logs beside it. ``speedup``
    replaces the measured one (None: kept), so which runtime answers does not hang on the
    timing of a busy machine; bench-batch measures it."""
    directory = tmp_path / "model"
    shutil.copytree(original.local_path, directory)
    target = directory / runtime.DIRECTORY
    target.mkdir()
    assert outcome.graph is not None
    (target / runtime.GRAPH).write_bytes(outcome.graph)
    (target / runtime.MANIFEST).write_bytes(outcome.manifest.to_json())
    for name, content in (outcome.trees.files if outcome.trees else {}).items():
        (target / name).write_bytes(content)
    manifest = target / library.TREES_MANIFEST
    if speedup is not None and manifest.is_file():
        doc = json.loads(manifest.read_bytes())
        doc["speedup"] = speedup if doc["verified"] else 0.0
        manifest.write_text(json.dumps(doc))
    return directory


def _answers(model: LoadedModel, table: Table) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in
            model.predict_table(table, outputs=model.output_names).items()}


def _for_files(directory: Path) -> LoadedModel:
    """Loaded as a scoring job loads a version for files."""
    model = load(str(directory), trees=True, compiled_threads=2)
    model.warm()
    return model


def _assert_same(original: LoadedModel, served: LoadedModel, table: Table) -> None:
    expected, got = _answers(original, table), _answers(served, table)
    result = compare(expected, got, table.rows)
    assert result.equal, result.describe()
    assert got["predict"].dtype == expected["predict"].dtype
    assert np.array_equal(got["predict"], expected["predict"])


def test_churn_pipeline_library_answers_as_the_original_with_edge_rows(
        trained: dict[str, Trained], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained["churn"]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    assert outcome.trees is not None
    built = outcome.trees.manifest
    assert built.verified, built.reason
    assert built.features_output and built.features_sha256  # the graph's preprocessing
    assert built.platform == library.platform_tag()
    assert built.rows == outcome.manifest.rows and built.speedup > 0
    assert outcome.tags()["ctcd.compiled.batch"].startswith("tl2cgen: x")
    directory = _copy(original, outcome, tmp_path)

    files = _for_files(directory)
    assert (files.runtime, files.compiled_view()["compiled"]) == ("tl2cgen", "verified"), \
        files.compiled_view()
    checked = verification_rows(original, model.holdout)
    _assert_same(original, files, checked)
    # a table of many slices (a scoring job's chunk is answered slice by slice)
    monkeypatch.setattr(library, "RUN_ROWS", 7)
    assert checked.rows > 3 * 7
    _assert_same(original, files, checked)
    monkeypatch.undo()
    served = load(str(directory))  # the model server and streaming keep the graph
    served.warm()
    assert served.runtime == "onnxruntime"
    slower = _for_files(_copy(original, outcome, tmp_path / "slower", speedup=0.9))
    assert slower.runtime == "onnxruntime"
    assert "tree library not used: x0.9 the graph's speed" in \
        slower.compiled_view()["compiled_reason"]

    rows = model.holdout.head(10).copy()
    arrays = {c: np.array(rows[c], dtype=object if rows[c].dtype.kind not in "if"
                          else "float64") for c in rows.columns}
    arrays["contract"][0] = "satellite"  # unseen in training
    arrays["contract"][1] = None  # missing category
    arrays["tenure_months"][2] = np.nan  # missing numbers
    arrays["total_charges"][3] = 1e12  # far outside what it was trained on
    arrays["data_usage_gb"][4] = -1e9
    _assert_same(original, files, Table(arrays, len(rows)))
    frame = pd.DataFrame(model.holdout.head(4))
    assert np.array_equal(files.predict(frame), original.predict(frame))


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_bare_models_library_answers_as_the_original(
        kind: str, gradient_boosted: dict[str, Trained], tmp_path: Path) -> None:
    model = gradient_boosted[kind]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    assert outcome.manifest.verified, outcome.manifest.reason
    assert outcome.trees is not None and outcome.trees.manifest.verified, \
        outcome.trees.manifest.reason
    files = _for_files(_copy(original, outcome, tmp_path))
    assert files.runtime == "tl2cgen"
    table = verification_rows(original, model.holdout)
    if kind == "regression":
        expected, got = original.predict_table(table), files.predict_table(table)
        assert np.allclose(got, expected, rtol=1e-9, atol=1e-9)
    else:
        _assert_same(original, files, table)


def test_forests_and_machines_without_a_compiler_keep_the_graph_and_say_why(
        trained: dict[str, Trained], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forest = trained["bench-random_forest"]
    original = _original(forest.uri)
    outcome = compile_loaded(original, forest.holdout)
    assert outcome.manifest.verified and outcome.trees is not None
    assert not outcome.trees.manifest.verified
    assert "RandomForestClassifier is not built" in outcome.tags()["ctcd.compiled.batch"]
    files = _for_files(_copy(original, outcome, tmp_path / "forest"))
    assert files.runtime == "onnxruntime"
    assert "no tree library for batch scoring: RandomForestClassifier" in \
        files.compiled_view()["compiled_reason"]

    monkeypatch.setenv("CC", "no-such-cc")
    churn = trained["churn"]
    original = _original(churn.uri)
    outcome = compile_loaded(original, churn.holdout)
    assert outcome.manifest.verified and outcome.trees is not None
    assert not outcome.trees.manifest.verified
    assert "no C compiler (no-such-cc)" in outcome.trees.manifest.reason
    assert set(outcome.trees.files) == {library.TREES_MANIFEST}
    files = _for_files(_copy(original, outcome, tmp_path / "churn"))
    assert files.runtime == "onnxruntime"

    # aarch64 Linux: no tl2cgen wheel, so it is not installed there
    monkeypatch.delenv("CC")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None
                        if name == "tl2cgen" else find_spec(name, *args))
    outcome = compile_loaded(original, churn.holdout)
    assert outcome.manifest.verified and outcome.trees is not None
    assert "tl2cgen is not installed here" in outcome.trees.manifest.reason


def test_a_tampered_or_foreign_library_is_refused_and_the_graph_answers(
        trained: dict[str, Trained], gradient_boosted: dict[str, Trained],
        tmp_path: Path) -> None:
    model = trained["churn"]
    original = _original(model.uri)
    outcome = compile_loaded(original, model.holdout)
    assert outcome.trees is not None and outcome.trees.manifest.verified
    directory = _copy(original, outcome, tmp_path / "churn")
    compiled = directory / runtime.DIRECTORY
    manifest_path = compiled / library.TREES_MANIFEST
    so = compiled / library.LIBRARY

    def refused(*why: str) -> None:
        files = _for_files(directory)
        view = files.compiled_view()
        assert (files.runtime, view["compiled"]) == ("onnxruntime", "verified")
        assert any(f"tree library refused: {w}" in view["compiled_reason"] for w in why), view
        example = original.example
        assert example is not None
        assert np.array_equal(files.predict_table(example), original.predict_table(example))

    # another version's library in its place: by its digest, then, with the digest
    # rewritten too, because it answers differently on the input example
    other = gradient_boosted["multiclass"]
    other_outcome = compile_loaded(_original(other.uri), other.holdout)
    assert other_outcome.trees is not None
    so.write_bytes(other_outcome.trees.files[library.LIBRARY])
    refused("compiled/trees.so is not the file that was verified")
    doc = json.loads(manifest_path.read_bytes())
    doc["library_sha256"] = library.sha256(so)
    manifest_path.write_text(json.dumps(doc))
    # 12 features where the churn graph gives more: it does not run, or answers otherwise
    refused("it does not run", "re-verification at load failed")

    so.write_bytes(outcome.trees.files[library.LIBRARY])
    doc["library_sha256"] = library.sha256(so)
    doc["platform"] = "linux-aarch64-glibc2.36"
    manifest_path.write_text(json.dumps(doc))
    refused("built for linux-aarch64-glibc2.36")


def test_compile_version_logs_the_library_and_scoring_jobs_use_it(
        trained: dict[str, Trained], mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    model = trained["churn"]
    # which runtime answers must not hang on a busy machine's timing (see _copy)
    monkeypatch.setattr(trees_build, "_speedup", lambda *args: 2.0)
    mlflow.set_tracking_uri(mlflow_server)
    version = str(mlflow.register_model(model.uri, "trees-churn").version)
    outcome = compile_version("trees-churn", version, tracking=Tracking(mlflow_server),
                              rows=model.holdout)
    assert outcome.trees is not None and outcome.trees.manifest.verified
    tags = MlflowClient(mlflow_server).get_model_version("trees-churn", version).tags
    assert tags["ctcd.compiled.batch"].startswith("tl2cgen: x2.0 the graph's speed")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    files = load_version("trees-churn", version, batch=True)
    streaming = load_version("trees-churn", version)
    assert (files.model.runtime, streaming.model.runtime) == ("tl2cgen", "onnxruntime")
    table = verification_rows(streaming.model, model.holdout)
    assert np.array_equal(files.model.predict_table(table),
                          streaming.model.predict_table(table))
