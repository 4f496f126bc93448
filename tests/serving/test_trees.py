"""The tree library's manifest and platform: what ``compiled/trees.json`` records survives a
round trip, an unreadable one reads as not verified (the graph answers), and a version
without one has no library to open. The library itself is built and run in
tests/compiled/test_trees.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctcd.serving.compiled import DIRECTORY, Manifest
from ctcd.serving.schema import Table
from ctcd.serving.trees import TREES_MANIFEST, TreesManifest, open_verified_trees, platform_tag


def test_manifest_round_trips_with_classes_of_any_kind(tmp_path: Path) -> None:
    manifest = TreesManifest(verified=True, reason="equal on 10 rows", classifier=True,
                             classes=("no", "yes"), predict_dtype="<U3",
                             features_output="transformed_column", library_sha256="ab",
                             features_sha256="cd", platform=platform_tag(),
                             builder="treelite, tl2cgen, gcc", speedup=1.8, rows=10,
                             max_abs_diff=1e-16)
    (tmp_path / DIRECTORY).mkdir()
    (tmp_path / DIRECTORY / TREES_MANIFEST).write_bytes(manifest.to_json())
    assert TreesManifest.read(tmp_path) == manifest
    assert platform_tag().startswith("linux-")


def test_an_unreadable_manifest_is_not_verified_and_none_is_nothing(tmp_path: Path) -> None:
    graph = Manifest(verified=True, reason="")
    table = Table({"x": np.zeros(1)}, 1)

    def original(t: Table, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        raise AssertionError("not called without a library")

    assert TreesManifest.read(tmp_path) is None
    assert open_verified_trees(tmp_path, graph, original, table, ("predict",),
                               threads=1) == (None, "")
    (tmp_path / DIRECTORY).mkdir()
    (tmp_path / DIRECTORY / TREES_MANIFEST).write_text("{not json")
    read = TreesManifest.read(tmp_path)
    assert read is not None and not read.verified
    assert f"unreadable {DIRECTORY}/{TREES_MANIFEST}" in read.reason
    trees, why = open_verified_trees(tmp_path, graph, original, table, ("predict",), threads=1)
    assert trees is None and why.startswith("no tree library for batch scoring: unreadable")
