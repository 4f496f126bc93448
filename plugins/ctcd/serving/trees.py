"""Batch scoring's tree runtime: a version's gradient-boosted trees compiled to native code
(Treelite imports them, tl2cgen writes C and gcc builds a shared library), fed by the
preprocessing part of the version's compiled ONNX graph.

On a scoring job's large chunks the trees are most of the work, and ONNX Runtime's tree
operator runs them about as fast as scikit-learn does; the compiled library ran the churn
pipeline's 100 trees on 1,000,000 rows in about half ONNX Runtime's CPU time. For one row a call
costs more than ONNX Runtime's, so the model server keeps the graph: only scoring jobs that
load a version for files (``ctcd predict``, the batch_inference DAG) use the library.

``ctcd models compile`` builds it beside the graph, when the graph was verified::

    compiled/trees.so         the trees (a shared library for this platform)
    compiled/features.onnx    the graph cut where the trees start (preprocessing, encoding)
    compiled/trees.json       the manifest: platform, checksums, classes, verification

It is held to the graph's rules: verified equal to the original model on the holdout rows
when built, used only where it was measured faster than the graph, and at load checked
against its checksums (before the library is opened), against this platform, and against
the original model on the input example and a synthetic row; anything else and the graph
answers instead, with the reason in the model's metadata.
"""

from __future__ import annotations

import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from ctcd.serving.compiled import (
    DIRECTORY,
    RUN_ROWS,
    CompiledModel,
    Manifest,
    Original,
    compare,
    digest,
)
from ctcd.serving.schema import Table

LIBRARY: Final = "trees.so"
FEATURES: Final = "features.onnx"
TREES_MANIFEST: Final = "trees.json"
TL2CGEN: Final = "tl2cgen"
FEATURES_OUTPUT: Final = "features"


def platform_tag() -> str:
    """What a shared library built here runs on: OS, machine and C library."""
    libc, libc_version = platform.libc_ver()
    return f"{sys.platform}-{platform.machine()}-{libc or 'libc'}{libc_version}"


def sha256(path: Path) -> str:
    return digest(path.read_bytes())


@dataclass(frozen=True)
class TreesManifest:
    """``compiled/trees.json``: what was built, for which platform, and how it was checked."""

    verified: bool
    reason: str  # the comparison, or why there is no library
    classifier: bool = False
    classes: tuple[Any, ...] = ()
    predict_dtype: str = ""
    features_output: str = ""  # the graph's tensor the trees read ("": the input itself)
    library_sha256: str = ""
    features_sha256: str = ""
    platform: str = ""
    builder: str = ""
    speedup: float = 0.0  # graph time / library time on a chunk, when built
    rows: int = 0
    max_abs_diff: float = 0.0

    def to_json(self) -> bytes:
        doc = {k: getattr(self, k) for k in self.__dataclass_fields__}
        doc["classes"] = list(self.classes)
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def read(cls, directory: Path) -> TreesManifest | None:
        path = directory / DIRECTORY / TREES_MANIFEST
        if not path.is_file():
            return None
        try:
            doc = orjson.loads(path.read_bytes())
            doc["classes"] = tuple(doc.get("classes") or ())
            return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as err:
            return cls(verified=False, reason=f"unreadable {DIRECTORY}/{TREES_MANIFEST}: {err}")


class TreeLibrary:
    """The trees' shared library (tl2cgen's predictor) behind the graph's preprocessing,
    answering ``predict`` / ``predict_proba`` as the original model does."""

    runtime: Final = TL2CGEN

    def __init__(self, library: Path, manifest: TreesManifest, graph: Manifest,
                 features: bytes | Path | None, *, threads: int = 0) -> None:
        import tl2cgen

        self.manifest = manifest
        self._predictor = tl2cgen.Predictor(str(library), nthread=threads or -1)
        self._dmatrix = tl2cgen.DMatrix
        self._features = None if features is None else CompiledModel(
            features, Manifest(verified=True, reason="", inputs=graph.inputs,
                               columns=graph.columns,
                               outputs={FEATURES_OUTPUT: manifest.features_output}),
            threads=threads)
        self._columns = tuple(name for name, _ in graph.columns)
        dtype = np.dtype(manifest.predict_dtype) if manifest.predict_dtype else None
        self._classes = np.asarray(manifest.classes, dtype=dtype) if manifest.classifier \
            else None
        self._lock = threading.Lock()  # tl2cgen's predictor takes one call at a time

    def run(self, table: Table, outputs: tuple[str, ...] = ("predict",)) -> dict[str, Any]:
        if table.rows <= RUN_ROWS:
            return self._answer(self._matrix(table), outputs)
        # a scoring job's chunk in slices, as the graph takes it: the encoded features (and
        # tl2cgen's copy of them) exist for one slice at a time, not the whole chunk
        parts = [self._answer(self._matrix(_rows(table, lo, lo + RUN_ROWS)), outputs)
                 for lo in range(0, table.rows, RUN_ROWS)]
        return {o: np.concatenate([p[o] for p in parts]) for o in outputs}

    def _matrix(self, table: Table) -> np.ndarray:
        """The rows as the trees read them: encoded by the graph's preprocessing, or the
        input's numbers as they are."""
        if self._features is not None:
            matrix = self._features.run(table, (FEATURES_OUTPUT,))[FEATURES_OUTPUT]
        elif table.block is not None:
            matrix = table.block
        else:
            matrix = np.column_stack([table.arrays[n] for n in self._columns])
        return np.ascontiguousarray(matrix, dtype=np.float64)

    def run_frame(self, frame: Any, outputs: tuple[str, ...] = ("predict",)) -> dict[str, Any]:
        arrays = {n: frame[n].to_numpy() for n in self._columns}
        return self.run(Table(arrays, len(frame)), outputs)

    def _answer(self, matrix: np.ndarray, outputs: tuple[str, ...]) -> dict[str, Any]:
        with self._lock:
            raw = self._predictor.predict(self._dmatrix(matrix))
        values = np.asarray(raw, dtype=np.float64).reshape(len(matrix), -1)
        if self._classes is None:
            return {o: values[:, 0] for o in outputs}
        proba = np.column_stack([1.0 - values[:, 0], values[:, 0]]) if values.shape[1] == 1 \
            else values
        answer: dict[str, Any] = {}
        for output in outputs:
            answer[output] = self._classes[np.argmax(proba, axis=1)] if output == "predict" \
                else proba
        return answer


def _rows(table: Table, lo: int, hi: int) -> Table:
    """Rows ``lo:hi`` of ``table``, as views."""
    hi = min(hi, table.rows)
    if table.block is not None:
        return Table(None, hi - lo, block=table.block[lo:hi], names=table.names)
    return Table({n: a[lo:hi] for n, a in table.arrays.items()}, hi - lo)


def open_verified_trees(directory: Path, graph: Manifest, original: Original, check: Table,
                        outputs: tuple[str, ...], *,
                        threads: int) -> tuple[TreeLibrary | None, str]:
    """The version's tree library when it was verified and faster than the graph when
    built, its files are the ones verified, it was built for this platform, and it answers
    as ``original`` on ``check`` now; else None, and why not ("": the version has none)."""
    manifest = TreesManifest.read(directory)
    if manifest is None:
        return None, ""
    if not manifest.verified:
        return None, f"no tree library for batch scoring: {manifest.reason}"
    if manifest.speedup <= 1.0:
        return None, (f"tree library not used: x{manifest.speedup:.1f} the graph's speed "
                      "when built")
    library, features = directory / DIRECTORY / LIBRARY, directory / DIRECTORY / FEATURES
    if manifest.platform != platform_tag():
        return None, (f"tree library refused: built for {manifest.platform}, this is "
                      f"{platform_tag()}")
    files = [(library, manifest.library_sha256)]
    if manifest.features_output:
        files.append((features, manifest.features_sha256))
    for path, want in files:
        if not want or not path.is_file() or sha256(path) != want:
            return None, (f"tree library refused: {DIRECTORY}/{path.name} is not the file "
                          "that was verified (its sha256 differs from the manifest's)")
    try:
        trees = TreeLibrary(library, manifest, graph,
                            features if manifest.features_output else None, threads=threads)
        got = trees.run(check, outputs)
    except Exception as err:  # tl2cgen and onnxruntime raise their own types
        return None, (f"tree library refused: it does not run ({type(err).__name__}: "
                      f"{str(err)[:300]})")
    result = compare(original(check, outputs), got, check.rows)
    if not result.equal:
        return None, f"tree library refused: re-verification at load failed: {result.describe()}"
    return trees, f"{manifest.reason}; x{manifest.speedup:.1f} the graph's speed"
