"""The model server's settings: ONNX Runtime's threads for a compiled model by default
share the server's cores among its workers."""

from __future__ import annotations

import pytest

from ctcd.serving import compiled
from ctcd.serving.settings import ServerSettings

MODEL = {"model_uri": "models:/m/1", "model_name": "m", "model_version": "1"}


@pytest.mark.parametrize(("cores", "workers", "threads"),
                         [(2, 1, 2), (2, 2, 1), (2, 4, 1), (8, 2, 4), (1, 1, 1)])
def test_compiled_threads_default_to_the_cores_each_worker_gets(
        monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, threads: int) -> None:
    monkeypatch.setattr(compiled, "cores", lambda: cores)
    settings = ServerSettings(**MODEL, workers=workers)
    assert settings.compiled_threads is None
    assert settings.onnx_threads() == threads


def test_compiled_threads_set_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "cores", lambda: 8)
    assert ServerSettings(**MODEL, compiled_threads=1).onnx_threads() == 1
    assert ServerSettings(**MODEL, compiled_threads=0).onnx_threads() == 0
    monkeypatch.setenv("CTCD_SERVER_COMPILED_THREADS", "3")
    assert ServerSettings(**MODEL).onnx_threads() == 3
