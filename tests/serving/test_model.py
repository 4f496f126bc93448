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
