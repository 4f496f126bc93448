"""A version's compiled model: its ONNX graph run by ONNX Runtime, used in place of the
original model's own predict once it was verified to answer the same.

``ctcd models compile`` (and the training DAG's ``register`` step) converts a model and logs
it beside the original, in the model's own artifact directory::

    compiled/model.onnx       the graph (preprocessing, string categories and all)
    compiled/compiled.json    the manifest: how to feed it, and the verification result

Nothing here trusts the manifest alone. At load, the compiled model is run again on the
input example and a synthetic row and compared with the original model (the same
tolerance as at compile time); a graph that answers differently is refused, and the
original model serves. Which runtime answers is in the server's metadata and in the
``X-Model-Runtime`` header.

A verified graph is used only where it was measured faster: at compile time both are timed
on 1 row and on all the verification rows, and a graph not faster at both is kept but not
used (``compiled: slower``; the original serves, and ONNX Runtime is not loaded at all).

The comparison itself (:func:`compare`) is the one ``ctcd models compile`` uses on the
holdout rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from ctcd.serving.schema import InputSchema, Table

log = logging.getLogger(__name__)

DIRECTORY: Final = "compiled"
GRAPH: Final = "model.onnx"
MANIFEST: Final = "compiled.json"
MANIFEST_VERSION: Final = 1
# Equality: class labels identical; probabilities and regression values within
# ATOL + RTOL * |original| (the relative term only matters for regression values above 1).
ATOL: Final = 1e-5
RTOL: Final = 1e-5
ONNX_RUNTIME: Final = "onnxruntime"


def enabled_by_env() -> bool:
    """Whether scoring jobs use compiled models (``CTCD_COMPILED``, default on)."""
    return os.environ.get("CTCD_COMPILED", "true").strip().lower() not in (
        "0", "false", "no", "off")


def threads_by_env() -> int:
    """ONNX Runtime's intra-op threads for streaming scorers (``CTCD_COMPILED_THREADS``, 1)."""
    return _threads("CTCD_COMPILED_THREADS", 1)


def batch_threads_by_env() -> int:
    """ONNX Runtime's intra-op threads for scoring files in process (``ctcd predict``, the
    batch_inference DAG): ``CTCD_COMPILED_BATCH_THREADS``, by default one per core this
    process may run on. A file's chunks are large and predicting them is most of the work,
    so the graph gets the cores scikit-learn's OpenMP would take (on one thread the compiled
    model scored 1,000,000 rows only 1.3x faster than scikit-learn on two)."""
    return _threads("CTCD_COMPILED_BATCH_THREADS", cores())


def cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on: its CPU affinity (not the machine's count), or its
    container's CPU quota when that is lower (a pod limited to 2 CPUs on a 64-core node)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, cpu_quota(cgroup) or count))


def cpu_quota(cgroup: Path) -> int | None:
    """Whole CPUs of the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), at least
    one; None without a quota."""
    try:
        if (cgroup / "cpu.max").is_file():
            limit, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:
            limit = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if limit in ("max", "-1"):
            return None
        return max(1, int(limit) // int(period))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _threads(variable: str, default: int) -> int:
    """A thread count from the environment; 0 is ONNX Runtime's own choice (one per core)."""
    try:
        return max(0, int(os.environ.get(variable, str(default))))
    except ValueError:
        return default


@dataclass(frozen=True)
class Comparison:
    """Original against compiled on the same rows."""

    rows: int
    max_abs_diff: float = 0.0
    label_mismatches: int = 0
    problem: str | None = None  # None: equal within the tolerance

    @property
    def equal(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem is not None:
            return self.problem
        return (f"equal on {self.rows} rows (labels identical, values within "
                f"{ATOL:g} + {RTOL:g}*|value|; largest difference {self.max_abs_diff:.3g})")


def compare(expected: Mapping[str, Any], got: Mapping[str, Any], rows: int) -> Comparison:
    """Each output of the original (``expected``) against the compiled model's: labels
    (text or integers, or a classifier's ``predict``) must be identical; numbers within
    the tolerance."""
    worst, mismatches = 0.0, 0
    for name, want in expected.items():
        a, b = np.asarray(want), np.asarray(got[name])
        if a.shape != b.shape:
            return Comparison(rows, problem=f"{name}: shape {list(b.shape)} instead of "
                              f"{list(a.shape)}")
        if a.dtype.kind in "fc" and name != "label":
            if a.dtype.kind == "f" and not np.array_equal(np.isnan(a), np.isnan(b)):
                return Comparison(rows, problem=f"{name}: missing values in other rows")
            ok = ~np.isnan(a) if a.dtype.kind == "f" else np.ones(a.shape, dtype=bool)
            diff = np.abs(a[ok].astype(np.float64) - b[ok].astype(np.float64))
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
            bad = diff > ATOL + RTOL * np.abs(a[ok].astype(np.float64))
            if bad.any():
                return Comparison(rows, worst, problem=(
                    f"{name}: {int(bad.sum())} value(s) differ by more than {ATOL:g} + "
                    f"{RTOL:g}*|value| (largest difference {worst:.3g})"))
        else:
            unequal = a != b
            mismatches += int(np.count_nonzero(unequal))
            if mismatches:
                return Comparison(rows, worst, mismatches, problem=(
                    f"{name}: {mismatches} of {rows} label(s) differ"))
    return Comparison(rows, worst)


@dataclass(frozen=True)
class Manifest:
    """``compiled/compiled.json``: what was compiled and how it was checked."""

    verified: bool
    reason: str  # what happened: the comparison, or why it was not compiled/verified
    inputs: str = "columns"  # "columns": one graph input per column; "block": one 2-D input
    columns: tuple[tuple[str, str], ...] = ()  # (column, "double" | "float" | "string")
    outputs: Mapping[str, str] = field(default_factory=dict)  # predict(_proba) -> graph output
    predict_dtype: str = ""
    sha256: str = ""
    converter: str = ""
    runtime: str = ""
    rows: int = 0
    max_abs_diff: float = 0.0
    speedup: Mapping[str, float] = field(default_factory=dict)

    @property
    def faster(self) -> bool:
        """Whether the graph answered faster than the original at every batch size it was
        timed at when compiled (1 row and all the verification rows): the one rule for using
        it. A speedup is original time over compiled time, rounded to a tenth."""
        return bool(self.speedup) and all(v > 1.0 for v in self.speedup.values())

    def slower_at(self) -> str:
        """The sizes where the graph was not faster, as ``2006 rows x0.6``."""
        return ", ".join(f"{k} x{v:.1f}" for k, v in self.speedup.items() if v <= 1.0) or \
            "no timing recorded"

    def to_json(self) -> bytes:
        doc = {"manifest_version": MANIFEST_VERSION, "verified": self.verified,
               "reason": self.reason, "inputs": self.inputs,
               "columns": [list(c) for c in self.columns], "outputs": dict(self.outputs),
               "predict_dtype": self.predict_dtype, "sha256": self.sha256,
               "converter": self.converter, "runtime": self.runtime, "rows": self.rows,
               "max_abs_diff": self.max_abs_diff, "speedup": dict(self.speedup),
               "faster": self.faster,  # derived from speedup: whether it is used
               "tolerance": {"atol": ATOL, "rtol": RTOL}}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest of a model directory, or None when it has none (never compiled)."""
        path = directory / DIRECTORY / MANIFEST
        if not path.is_file():
            return None
        try:
            doc = orjson.loads(path.read_bytes())
            return cls(
                verified=bool(doc["verified"]), reason=str(doc.get("reason", "")),
                inputs=str(doc.get("inputs", "columns")),
                columns=tuple((str(n), str(t)) for n, t in doc.get("columns", [])),
                outputs={str(k): str(v) for k, v in (doc.get("outputs") or {}).items()},
                predict_dtype=str(doc.get("predict_dtype", "")),
                sha256=str(doc.get("sha256", "")), converter=str(doc.get("converter", "")),
                runtime=str(doc.get("runtime", "")), rows=int(doc.get("rows", 0)),
                max_abs_diff=float(doc.get("max_abs_diff", 0.0)),
                speedup={str(k): float(v) for k, v in (doc.get("speedup") or {}).items()})
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            return cls(verified=False, reason=f"unreadable {DIRECTORY}/{MANIFEST}: {err}")


_NUMERIC: Final = {"double": np.float64, "float": np.float32}
RUN_ROWS: Final = 25_000  # most rows in one ONNX Runtime call


class CompiledModel:
    """An ONNX graph in an ONNX Runtime session, fed from checked input (a :class:`Table`
    or the model's DataFrame) and answering ``predict`` / ``predict_proba`` as the original
    model does (labels in the original's dtype, probabilities as float64)."""

    runtime: Final = ONNX_RUNTIME

    def __init__(self, graph: bytes | Path, manifest: Manifest, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if threads != 1:
            # the pool's threads sleep between calls instead of spinning: in a scoring job
            # the reader and writer threads need those cores between two chunks' calls
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # no memory arena: a large batch's intermediate buffers go back after each call
        # instead of staying held by the session (batch scoring's peak memory grew ~40 MB
        # per 100,000-row chunk with it); one row took the same time either way here
        options.enable_cpu_mem_arena = False
        source = str(graph) if isinstance(graph, Path) else graph
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.manifest = manifest
        self._run = self.session.run
        self._label_dtype = np.dtype(manifest.predict_dtype) if manifest.predict_dtype else None
        self._columns = manifest.columns
        self._block_dtype = _NUMERIC.get(manifest.columns[0][1] if manifest.columns else "",
                                         np.float32)
        self._names = {k: v for k, v in manifest.outputs.items()}

    @classmethod
    def open(cls, directory: Path, *, threads: int = 1) -> CompiledModel:
        manifest = Manifest.read(directory)
        if manifest is None:
            raise FileNotFoundError(f"{directory / DIRECTORY / MANIFEST}")
        return cls(directory / DIRECTORY / GRAPH, manifest, threads=threads)

    def feeds(self, arrays: Mapping[str, np.ndarray], block: np.ndarray | None,
              rows: int) -> dict[str, np.ndarray]:
        if self.manifest.inputs == "block":
            if block is None:
                block = np.column_stack([np.asarray(arrays[n], dtype=self._block_dtype)
                                         for n, _ in self._columns])
            return {"input": np.ascontiguousarray(block, dtype=self._block_dtype)}
        feeds: dict[str, np.ndarray] = {}
        for name, kind in self._columns:
            values = arrays[name]
            if kind == "string":
                if values.dtype.kind != "O" or np.equal(values, None).any():  # type: ignore[call-overload]
                    values = np.array(["" if v is None else str(v) for v in values],
                                      dtype=object)
                feeds[name] = values.reshape(rows, 1)
            else:
                feeds[name] = np.asarray(values, dtype=_NUMERIC[kind]).reshape(rows, 1)
        return feeds

    def run(self, table: Table, outputs: tuple[str, ...] = ("predict",)) -> dict[str, Any]:
        """The named outputs (``predict``, ``predict_proba``) for the rows of ``table``."""
        arrays = table.arrays if table.block is None or self.manifest.inputs != "block" \
            else {}
        return self._answer(self.feeds(arrays, table.block, table.rows), outputs)

    def run_frame(self, frame: Any, outputs: tuple[str, ...] = ("predict",)) -> dict[str, Any]:
        arrays = {n: frame[n].to_numpy() for n, _ in self._columns}
        return self._answer(self.feeds(arrays, None, len(frame)), outputs)

    def _answer(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, Any]:
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if rows <= RUN_ROWS:
            return self._answer_once(feeds, outputs)
        # a large table (a scoring job's chunk) in slices: the graph's intermediate tensors
        # (its own copy of every text value, the encoded block) are held for one slice at a
        # time, not the whole chunk; the slices are views of the feeds
        parts = [self._answer_once({n: v[lo:lo + RUN_ROWS] for n, v in feeds.items()}, outputs)
                 for lo in range(0, rows, RUN_ROWS)]
        return {o: np.concatenate([p[o] for p in parts]) for o in outputs}

    def _answer_once(self, feeds: dict[str, np.ndarray],
                     outputs: tuple[str, ...]) -> dict[str, Any]:
        names = [self._names[o] for o in outputs]
        values = self._run(names, feeds)
        answer: dict[str, Any] = {}
        for output, value in zip(outputs, values, strict=True):
            if output == "predict":
                value = value.reshape(-1) if value.ndim == 2 and value.shape[1] == 1 else value
                if self._label_dtype is not None and value.dtype != self._label_dtype:
                    value = value.astype(self._label_dtype)
            else:
                value = value.astype(np.float64)
            answer[output] = value
        return answer


def digest(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


@dataclass(frozen=True)
class CompiledStatus:
    """What a loaded version says about its compiled model (the server's metadata)."""

    runtime: str  # what answers: "onnxruntime", or the original flavor ("sklearn", ...)
    compiled: str  # "verified" (in use), "pending" (opened once the server is ready),
    # "slower" (verified, not used), "off", "none", "failed", "refused"
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        doc = {"runtime": self.runtime, "compiled": self.compiled}
        if self.reason:
            doc["reason"] = self.reason
        return doc


Original = Callable[[Table, tuple[str, ...]], Mapping[str, Any]]


def worth_opening(directory: Path) -> bool:
    """Whether :func:`open_verified` would go as far as ONNX Runtime: a graph logged,
    verified and faster (a cheap check, the manifest only)."""
    manifest = Manifest.read(directory)
    return manifest is not None and manifest.verified and manifest.faster


def open_verified(directory: Path, original: Original, check: Table, outputs: tuple[str, ...],
                  *, threads: int, flavor: str) -> tuple[CompiledModel | None, CompiledStatus]:
    """The compiled model of ``directory`` when its manifest says it was verified and it
    answers as ``original`` on ``check`` now (the input example and synthetic rows: a graph
    replaced or altered since it was verified is refused here); else None, and why."""
    manifest = Manifest.read(directory)
    if manifest is None:
        return None, CompiledStatus(flavor, "none", "no compiled model logged with this "
                                    "version (`ctcd models compile` makes one)")
    if not manifest.verified:
        return None, CompiledStatus(flavor, "failed", manifest.reason)
    if not manifest.faster:  # decided before ONNX Runtime is even imported
        return None, CompiledStatus(flavor, "slower", f"{manifest.reason}; not used: not "
                                    f"faster than the original at {manifest.slower_at()}")
    graph = directory / DIRECTORY / GRAPH
    if graph.is_file() and manifest.sha256 and digest(graph.read_bytes()) != manifest.sha256:
        return None, CompiledStatus(flavor, "refused", f"{DIRECTORY}/{GRAPH} is not the graph "
                                    f"that was verified (its sha256 differs from the manifest's)")
    try:
        compiled = CompiledModel(graph, manifest, threads=threads)
        got = compiled.run(check, outputs)
    except Exception as err:  # onnxruntime raises its own types; any failure: serve the original
        return None, CompiledStatus(flavor, "refused", f"{DIRECTORY}/{GRAPH} does not run "
                                    f"({type(err).__name__}: {str(err)[:300]})")
    result = compare(original(check, outputs), got, check.rows)
    if not result.equal:
        return None, CompiledStatus(flavor, "refused", f"re-verification at load failed: "
                                    f"{result.describe()}")
    return compiled, CompiledStatus(ONNX_RUNTIME, "verified", manifest.reason)


def check_rows(schema: InputSchema, example: Table | None) -> Table:
    """The rows a compiled model is re-verified on at load: the input example and one
    synthetic row (zeros and empty text)."""
    rows = [example] if example is not None else []
    rows.append(schema.synthetic_rows())
    return Table.concat(rows) if len(rows) > 1 and _same_kind(rows) else rows[0]


def _same_kind(tables: list[Table]) -> bool:
    return len({t.block is None for t in tables}) == 1 and len(
        {tuple(t.names) for t in tables}) == 1
