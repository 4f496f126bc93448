"""Build batch scoring's tree library (:mod:`ctcd.serving.trees`) beside a verified graph:
the model's gradient-boosted trees imported by Treelite, written as C by tl2cgen and built
with gcc; the graph cut where its trees start, for the preprocessing before them; the two
verified together against the original model on the same rows as the graph, and timed
against the graph.

Only scikit-learn's HistGradientBoosting models are built, the project's default estimator:
a 100-tree RandomForest of depth 12 took gcc 105 s to build here, so forests keep the graph
alone.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Final

import numpy as np

from ctcd.compiled.convert import TREES, steps
from ctcd.serving.compiled import CompiledModel, Manifest, compare, cores, digest
from ctcd.serving.schema import Table
from ctcd.serving.trees import (
    FEATURES,
    LIBRARY,
    TREES_MANIFEST,
    TreeLibrary,
    TreesManifest,
    platform_tag,
    sha256,
)

log = logging.getLogger(__name__)

BUILT: Final = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
TIMED_ROWS: Final = 50_000  # the size library and graph are timed at


@dataclass(frozen=True)
class Built:
    manifest: TreesManifest
    files: dict[str, bytes]  # file name in compiled/ -> content (empty when not built)


def build(model: Any, graph: bytes, manifest: Manifest, table: Table,
          expected: Mapping[str, Any], outputs: tuple[str, ...]) -> Built:
    """The tree library of ``model`` (the original, as loaded) whose verified ``graph``
    answered ``expected`` on ``table``; a manifest saying why not when there is none."""
    final = steps(model)[-1]
    kind = type(final).__name__
    if kind not in BUILT:
        return _not_built(f"{kind} is not built as a tree library (only {', '.join(BUILT)})")
    if importlib.util.find_spec("tl2cgen") is None:
        return _not_built("tl2cgen is not installed here (it has no wheel for this platform)")
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        return _not_built(f"no C compiler ({compiler}) on this machine to build it with; "
                          "install gcc and run `ctcd models compile` again")
    with tempfile.TemporaryDirectory(prefix="ctcd-trees-") as tmp:
        library = Path(tmp) / LIBRARY
        try:
            features_output, features = features_graph(graph)
            _export(final, library, compiler)
        except Exception as err:  # onnx's, treelite's and tl2cgen's own errors, and gcc's
            return _not_built(f"tl2cgen could not build it: {type(err).__name__}: "
                              f"{str(err)[:300]}")
        classes = getattr(final, "classes_", None)
        trees_manifest = TreesManifest(
            verified=False, reason="", classifier=classes is not None,
            classes=tuple(np.asarray(classes).tolist()) if classes is not None else (),
            predict_dtype=np.asarray(expected["predict"]).dtype.str,
            features_output=features_output, library_sha256=sha256(library),
            features_sha256=digest(features) if features is not None else "",
            platform=platform_tag(),
            builder=f"treelite {dist_version('treelite')}, tl2cgen {dist_version('tl2cgen')}, "
                    f"{compiler}")
        try:
            trees = TreeLibrary(library, trees_manifest, manifest, features, threads=1)
            got = trees.run(table, outputs)
        except Exception as err:  # tl2cgen's and onnxruntime's own errors
            return _not_built(f"the library does not run: {type(err).__name__}: "
                              f"{str(err)[:300]}")
        result = compare(expected, got, table.rows)
        if not result.equal:
            return _not_built(f"verification failed: {result.describe()}")
        speedup = _speedup(CompiledModel(graph, manifest), trees, table, outputs)
        files = {LIBRARY: library.read_bytes()}
    if features is not None:
        files[FEATURES] = features
    done = replace(trees_manifest, verified=True, reason=f"tree library {result.describe()}",
                   speedup=speedup, rows=table.rows, max_abs_diff=result.max_abs_diff)
    files[TREES_MANIFEST] = done.to_json()
    return Built(done, files)


def features_graph(graph: bytes) -> tuple[str, bytes | None]:
    """The tensor the graph's tree ensemble reads, before its cast to float32, and the graph
    cut there (None when the trees read the graph's input as it is)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load_from_string(graph)
    trees = [n for n in model.graph.node if n.op_type in TREES]
    if len(trees) != 1:
        raise ValueError(f"the graph has {len(trees)} tree ensembles, not one")
    tensor = trees[0].input[0]
    casts = [n for n in model.graph.node if n.op_type == "Cast" and tensor in n.output]
    if casts:  # the float32 cast ctcd.compiled.convert puts before every ensemble
        tensor = casts[0].input[0]
    inputs = [i.name for i in model.graph.input]
    if tensor in inputs:
        return "", None
    cut = Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(inputs, [tensor])
    return tensor, cut.SerializeToString()


def _export(estimator: Any, library: Path, compiler: str) -> None:
    import tl2cgen
    import treelite

    imported = treelite.sklearn.import_model(estimator)
    with _quiet(), redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its progress and notes are not for the task log
        # quantize: each row's features become indices into every feature's sorted
        # thresholds once, and the trees compare integers; on the batch bench's model the
        # trees took 25-30% less CPU so, with the same answers
        tl2cgen.export_lib(imported, toolchain=compiler, libpath=str(library),
                           params={"parallel_comp": max(2, cores()), "quantize": 1},
                           nthread=cores())


@contextmanager
def _quiet() -> Iterator[None]:
    """File descriptors 1 and 2 to a file for the block; its text is logged at debug level."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
            if text:
                log.debug("tl2cgen: %s", text[-2000:])


def _speedup(graph: CompiledModel, trees: TreeLibrary, table: Table,
             outputs: tuple[str, ...]) -> float:
    """Graph time over library time on a scoring job's chunk (the verification rows
    repeated to :data:`TIMED_ROWS`), best of 5 each."""
    reps = -(-TIMED_ROWS // table.rows)
    table = Table({n: np.tile(a, reps)[:TIMED_ROWS] for n, a in table.arrays.items()},
                  TIMED_ROWS)

    def best(call: Callable[[], Any]) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times)

    before = best(lambda: graph.run(table, outputs))
    after = best(lambda: trees.run(table, outputs))
    return round(before / after, 1) if after > 0 else 0.0


def _not_built(reason: str) -> Built:
    manifest = TreesManifest(verified=False, reason=reason)
    return Built(manifest, {TREES_MANIFEST: manifest.to_json()})
