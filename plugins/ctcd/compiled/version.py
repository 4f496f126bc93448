"""Compile a registered version: convert its model, verify the graph against the original on
the holdout rows and the input example, time both, and log the result beside the model.

The graph and its manifest go into the model's own artifact directory (``compiled/``; the
original files are never touched), so whatever downloads the model gets them too; the
outcome is also set as tags of the version:

| tag | value |
|---|---|
| ``ctcd.compiled`` | ``verified`` (used), ``slower`` (equal but not faster at 1 row and at  |
|  | all rows: kept, not used), ``failed`` (conversion or verification) |
| ``ctcd.compiled.reason`` | the comparison, or why there is no usable graph |
| ``ctcd.compiled.runtime`` | ``onnxruntime <version>``, converter and its version |
| ``ctcd.compiled.speedup`` | original time / compiled time, 1 row and all rows |
| ``ctcd.compiled.batch`` | the tree library scoring jobs use (:mod:`ctcd.compiled.trees`), |
|  | or why there is none |

A model that fails either way is served as it is, and the reason shows in the tags,
``ctcd models compile`` and the model server's metadata.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from ctcd.compiled.convert import Converted, NotCompilable, convert
from ctcd.compiled.trees import TIMED_ROWS, Built, build
from ctcd.serving import compiled as runtime
from ctcd.serving.compiled import CompiledModel, Manifest, compare
from ctcd.serving.model import LoadedModel
from ctcd.serving.recorded import FILE as RECORDED
from ctcd.serving.recorded import Recorded
from ctcd.serving.schema import Table, check_columns

log = logging.getLogger(__name__)

HOLDOUT_ARTIFACT: Final = "verification/holdout.parquet"  # in the training run
HOLDOUT_ROWS: Final = 2000  # the most holdout rows kept for verification
TAG: Final = "ctcd.compiled"


@dataclass(frozen=True)
class Outcome:
    manifest: Manifest
    graph: bytes | None  # None when there is nothing to use
    trees: Built | None = None  # batch scoring's tree library, built beside a verified graph
    # for a graph used: the original's answers on the rows a server checks it on at load
    recorded: Recorded | None = None

    def files(self) -> dict[str, bytes]:
        """What goes into the model's ``compiled/`` directory, by file name."""
        files = {runtime.MANIFEST: self.manifest.to_json()}
        if self.graph is not None:
            files[runtime.GRAPH] = self.graph
        if self.recorded is not None:
            files[RECORDED] = self.recorded.to_json()
        return files | (self.trees.files if self.trees is not None else {})

    def tags(self) -> dict[str, str]:
        m = self.manifest
        state = ("verified" if m.faster else "slower") if m.verified else "failed"
        reason = m.reason if state != "slower" else (
            f"{m.reason}; not used: not faster than the original at {m.slower_at()}")
        tags = {TAG: state, f"{TAG}.reason": reason[:4000]}
        if m.runtime:
            tags[f"{TAG}.runtime"] = f"{m.runtime}; {m.converter}"
        if m.speedup:
            tags[f"{TAG}.speedup"] = ", ".join(f"{k} x{v:.1f}" for k, v in m.speedup.items())
        if self.trees is not None:
            t = self.trees.manifest
            tags[f"{TAG}.batch"] = (f"tl2cgen: x{t.speedup:.1f} the graph's speed on "
                                    f"{TIMED_ROWS:,} rows, verified on {t.rows} rows "
                                    f"({t.builder}; {t.platform})" if t.verified
                                    else f"graph only: {t.reason}")[:4000]
        return tags


def verification_rows(model: LoadedModel, rows: pd.DataFrame | None) -> Table:
    """The holdout rows (checked against the signature, as a request's are) and the input
    example, as one table."""
    schema = model.schema
    assert schema is not None
    tables = []
    missing = [c.name for c in schema.columns if rows is not None and c.name not in rows]
    if missing:
        log.warning("the verification rows lack the model's column(s) %s: verifying on the "
                    "input example and a synthetic row only", missing)
    elif rows is not None and len(rows):
        frame = rows.head(HOLDOUT_ROWS)
        tables.append(check_columns(schema, {c.name: frame[c.name].to_numpy(dtype=object)
                                             for c in schema.columns}, "holdout."))
    if model.example is not None:
        tables.append(model.example)
    tables.append(schema.synthetic_rows())
    arrays = [t.arrays for t in tables]
    return Table({n: np.concatenate([a[n] for a in arrays]) for n in schema.names},
                 sum(t.rows for t in tables))


def compile_loaded(model: LoadedModel, rows: pd.DataFrame | None = None, *,
                   threads: int = 1) -> Outcome:
    """Convert, verify and time ``model`` (loaded with ``compiled=False`` and warmed);
    ``rows``: the holdout rows to verify on (besides the input example). Both sides run on
    ``threads`` native threads, as the model server runs them."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _compile(model, rows, threads)


def _compile(model: LoadedModel, rows: pd.DataFrame | None, threads: int) -> Outcome:
    native, schema = model.native, model.schema
    if native is None or schema is None:
        return _failed("the model is served through pyfunc (custom code, or a flavor with "
                       "no native loader): nothing to compile")
    try:
        converted = convert(native, schema)
    except NotCompilable as err:
        return _failed(f"not converted: {err.reason}")
    table = verification_rows(model, rows)
    outputs = model.output_names
    original = _original(model)
    expected = original(table, outputs)
    predict_dtype = np.asarray(expected["predict"]).dtype
    manifest = _manifest(converted, predict_dtype, verified=False, reason="")
    try:
        compiled = CompiledModel(converted.graph, manifest, threads=threads)
        got = compiled.run(table, outputs)
    except Exception as err:  # onnxruntime's own error types: any failure is a reason shown
        return _failed(f"the converted graph does not run in ONNX Runtime "
                       f"({type(err).__name__}: {str(err)[:300]})", converted, predict_dtype)
    result = compare(expected, got, table.rows)
    if not result.equal:
        return _failed(f"verification failed: {result.describe()}", converted, predict_dtype)
    speedup = {"1 row": _speedup(original, compiled, _head(table, 1), outputs),
               f"{table.rows} rows": _speedup(original, compiled, table, outputs, calls=3)}
    manifest = _manifest(converted, predict_dtype, verified=True, reason=result.describe(),
                         rows=table.rows, max_abs_diff=result.max_abs_diff, speedup=speedup)
    trees = build(native.model, converted.graph, manifest, table, expected, outputs)
    check = runtime.check_rows(schema, model.example)
    recorded = Recorded(manifest.sha256, native.flavor, outputs, native.task, native.classes,
                        {n: np.asarray(v) for n, v in original(check, outputs).items()})
    return Outcome(manifest, converted.graph, trees, recorded if manifest.faster else None)


def compile_version(name: str, version: str, *, tracking: Any,
                    rows: pd.DataFrame | None = None) -> Outcome:
    """Compile ``models:/name/version`` and log the outcome beside it (graph, manifest,
    tags). ``rows``: the rows to verify on; default the holdout rows its training run
    logged (:data:`HOLDOUT_ARTIFACT`)."""
    from ctcd.serving.model import load

    client = tracking.client
    found = client.get_model_version(name, version)
    with tracking.active():
        model = load(f"models:/{name}/{version}", compiled=False)
    try:
        model.warm()
        if rows is None and found.run_id:
            rows = holdout_rows(client, found.run_id)
        outcome = compile_loaded(model, rows)
    finally:
        model.close()
    _log(client, found, outcome)
    for key, value in outcome.tags().items():
        client.set_model_version_tag(name, version, key, value)
    tags = outcome.tags()
    verb = {"verified": "compiled and verified", "slower": "compiled and verified, but served "
            "uncompiled (not faster)"}.get(tags[TAG], "served uncompiled")
    log.info("%s version %s %s: %s", name, version, verb, tags[f"{TAG}.reason"])
    if f"{TAG}.batch" in tags:
        log.info("%s version %s, for scoring files: %s", name, version, tags[f"{TAG}.batch"])
    return outcome


def log_holdout(client: Any, run_id: str, holdout: pd.DataFrame, columns: list[str]) -> None:
    """Keep up to :data:`HOLDOUT_ROWS` holdout rows (the model's input columns) with the
    training run, for verifying a compiled model later."""
    with tempfile.TemporaryDirectory(prefix="ctcd-holdout-") as tmp:
        path = Path(tmp) / Path(HOLDOUT_ARTIFACT).name
        holdout[[c for c in columns if c in holdout]].head(HOLDOUT_ROWS).to_parquet(
            path, index=False)
        client.log_artifact(run_id, str(path), str(Path(HOLDOUT_ARTIFACT).parent))


def holdout_rows(client: Any, run_id: str) -> pd.DataFrame | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ctcd-holdout-") as tmp:
        try:
            path = client.download_artifacts(run_id, HOLDOUT_ARTIFACT, tmp)
        except (MlflowException, OSError):
            log.warning("run %s has no %s: verifying on the input example and synthetic "
                        "rows only", run_id, HOLDOUT_ARTIFACT)
            return None
        return pd.read_parquet(path)


def _log(client: Any, found: Any, outcome: Outcome) -> None:
    """The outcome's files into the model's artifact directory, under ``compiled/``."""
    with tempfile.TemporaryDirectory(prefix="ctcd-compiled-") as tmp:
        directory = Path(tmp)
        for name, content in outcome.files().items():
            (directory / name).write_bytes(content)
        model_id = getattr(found, "model_id", None) or _logged_model_id(str(found.source))
        if model_id:
            client.log_model_artifacts(model_id, str(directory), runtime.DIRECTORY)
        else:  # a version registered from a run's artifact path
            source = str(found.source)
            path = source.split("/artifacts/", 1)[1] if "/artifacts/" in source else "model"
            client.log_artifacts(found.run_id, str(directory), f"{path}/{runtime.DIRECTORY}")


def _logged_model_id(source: str) -> str | None:
    """``m-...`` of a version registered from a logged model (``models:/m-...``): MLflow
    leaves the version's ``model_id`` empty when ``log_model`` registered it."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", source)
    return match[1] if match else None


Predictor = Callable[[Table, tuple[str, ...]], Mapping[str, Any]]


def _original(model: LoadedModel) -> Predictor:
    def predict(table: Table, names: tuple[str, ...]) -> Mapping[str, Any]:
        return {n: np.asarray(v) for n, v in model.predict_table(table, outputs=names).items()}

    return predict


def _speedup(original: Predictor, compiled: CompiledModel, table: Table,
             outputs: tuple[str, ...], calls: int = 30) -> float:
    def best(call: Callable[[], Any]) -> float:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times)

    before = best(lambda: original(table, outputs))
    after = best(lambda: compiled.run(table, outputs))
    return round(before / after, 1) if after > 0 else 0.0


def _head(table: Table, rows: int) -> Table:
    return Table({n: a[:rows] for n, a in table.arrays.items()}, rows)


def _manifest(converted: Converted, predict_dtype: np.dtype[Any], *, verified: bool,
              reason: str, rows: int = 0, max_abs_diff: float = 0.0,
              speedup: Mapping[str, float] | None = None) -> Manifest:
    return Manifest(verified=verified, reason=reason, inputs=converted.inputs,
                    columns=converted.columns, outputs=converted.outputs,
                    predict_dtype=predict_dtype.str, converter=converted.converter,
                    sha256=runtime.digest(converted.graph),
                    runtime=f"{runtime.ONNX_RUNTIME} {dist_version('onnxruntime')}",
                    rows=rows, max_abs_diff=max_abs_diff, speedup=dict(speedup or {}))


def _failed(reason: str, converted: Converted | None = None,
            predict_dtype: np.dtype[Any] | None = None) -> Outcome:
    if converted is None or predict_dtype is None:
        return Outcome(Manifest(verified=False, reason=reason), None)
    return Outcome(_manifest(converted, predict_dtype, verified=False, reason=reason), None)
