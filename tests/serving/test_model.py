"""Loading a version: its downloaded files live exactly as long as the version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctcd.serving.errors import ModelLoadError
from ctcd.serving.handlers import ModelServer
from ctcd.serving.model import load

pytestmark = pytest.mark.anyio


def _downloads(root: Path) -> list[Path]:
    return sorted(root.glob("ctcd-model-*"))


async def test_unloading_a_version_removes_its_files(churn_versions: Any,
                                                     tmp_path: Path) -> None:
    first, second = churn_versions
    server = ModelServer(first.name, loader=lambda uri: load(uri, download_dir=tmp_path))
    server.install(first.version, server.load_blocking(first.uri), weight=1.0)
    status, _ = await server.add_version(second.uri, second.version)
    assert status == 201
    assert len(_downloads(tmp_path)) == 2
    assert all((d / "model" / "MLmodel").is_file() for d in _downloads(tmp_path))
    kept = server.registry.get(first.version).model.workdir
    await server.remove_version(second.version)
    assert _downloads(tmp_path) == [kept]
    server.close()  # the server stops
    assert _downloads(tmp_path) == []


def test_a_failed_load_leaves_no_files(mlflow_server: str, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="models:/does-not-exist/1"):
        load("models:/does-not-exist/1", download_dir=tmp_path)
    assert _downloads(tmp_path) == []


def test_a_local_directory_is_used_in_place(churn_model: Any, tmp_path: Path) -> None:
    downloaded = load(churn_model.uri, download_dir=tmp_path)
    assert downloaded.workdir is not None
    in_place = load(str(downloaded.local_path), download_dir=tmp_path)
    assert in_place.local_path == downloaded.local_path
    assert in_place.workdir is None
    assert len(_downloads(tmp_path)) == 1  # no empty directory for the in-place load
    in_place.close()
    assert downloaded.local_path.is_dir()
    downloaded.close()
    assert _downloads(tmp_path) == []


def test_a_bare_estimator_on_numeric_columns_is_given_arrays(
    mlflow_server: str, churn_model: Any, tmp_path: Path
) -> None:
    """The server checks and orders columns by name, so a bare estimator fitted on exactly
    the signature's numeric columns gets the ndarray (scikit-learn's own name check of a
    DataFrame is a quarter of a small forest predict): same answers, no warning. A pipeline
    keeps its DataFrame (a step may select columns by name)."""
    import warnings

    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    from ctcd.serving.schema import Table, check_columns
    from ctcd.training.model import log_model

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 6)), columns=[f"x{i}" for i in range(6)])
    labels = (frame["x0"] + frame["x3"] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)
    forest.fit(frame, labels)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("ctcd-tests")
    with mlflow.start_run():
        log_model(forest, frame.head(5), registered_model_name="arrays-forest")  # type: ignore[arg-type]

    loaded = load("models:/arrays-forest/1", download_dir=tmp_path)
    assert not loaded.takes_arrays  # decided at warm-up, in the process that serves
    loaded.warm()
    assert loaded.takes_arrays
    assert loaded.native is not None
    assert not hasattr(loaded.native.model, "feature_names_in_")
    table = check_columns(loaded.schema, {c: frame[c].to_numpy() for c in frame.columns}, "")  # type: ignore[arg-type]
    block = Table(None, len(frame), block=frame.to_numpy(), names=tuple(frame.columns))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "X does not have valid feature names" would fail
        assert (loaded.predict_table(table) == forest.predict(frame)).all()
        assert (loaded.predict_table(block) == forest.predict(frame)).all()
        outputs = loaded.predict(table.to_model_input(), outputs=("predict", "predict_proba"))
    assert (outputs["predict"] == forest.predict(frame)).all()
    assert np.array_equal(outputs["predict_proba"], forest.predict_proba(frame))
    loaded.close()

    pipeline = load(churn_model.uri, download_dir=tmp_path)
    pipeline.warm()
    assert not pipeline.takes_arrays
    assert pipeline.native is not None
    assert hasattr(pipeline.native.model, "feature_names_in_")
    pipeline.close()
