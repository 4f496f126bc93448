"""Load one model version and score checked input with it.

A model URI (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``, a local
directory) resolves through the tracking URI of the environment.

Two ways to call a model, with the same answers:

- *native*: a model of a flavor the server knows (scikit-learn, XGBoost, LightGBM; see
  :mod:`ctcd.serving.flavors`) is deserialized exactly as its MLflow flavor does, from the
  flavor configuration in ``MLmodel``, and called as its pyfunc would call it, on the frame
  the signature check built. That frame already has the signature's columns, order and
  dtypes, which is all MLflow's schema enforcement would do to it. No mlflow import: the
  server starts in a fraction of the time. A model fitted on exactly the signature's
  numeric columns, in order, may be given the frame's ndarray instead (the columns were
  checked and ordered by name here), when that answers the same at warm-up.
- *pyfunc*: any other flavor, and custom code, goes through ``mlflow.pyfunc.load_model``.

A native model compiled and verified by ``ctcd models compile`` (:mod:`ctcd.serving.compiled`)
is answered by its ONNX graph instead, after the graph is checked again against the original
at load; ``compiled=False`` (the server's ``--no-compiled``, ``CTCD_COMPILED=false`` for
scoring jobs) keeps the original. A server starting up opens the graph only once it is ready
(``warm(compiled_later=True)``, then :meth:`LoadedModel.open_compiled` in the background):
importing ONNX Runtime and checking the graph again take a tenth of a second or more, which
the first requests need not wait for; the original model answers them, and the metadata
says ``compiled: pending`` until the graph takes over.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from ctcd.serving import compiled as compiled_module
from ctcd.serving.compiled import CompiledModel, CompiledStatus
from ctcd.serving.errors import InvalidInput, ModelLoadError, ModelRejectedInput
from ctcd.serving.fetch import fetch
from ctcd.serving.flavors import NativeModel, load_native, try_arrays
from ctcd.serving.schema import InputSchema, Table, check_columns, check_tensor
from ctcd.serving.trees import TreeLibrary, open_verified_trees

log = logging.getLogger(__name__)

@dataclass
class LoadedModel:
    uri: str
    local_path: Path
    schema: InputSchema | None
    example: Table | None
    native: NativeModel | None = None  # the model called natively
    pyfunc: Any = None  # mlflow.pyfunc.PyFuncModel when not native
    workdir: Path | None = None  # the download directory this version owns
    takes_arrays: bool = False  # the native model is given ndarrays (set at warm-up)
    # what ``predict`` answers, seen at warm-up: V2 datatype source and shape ([-1, ...])
    predict_dtype: np.dtype[Any] | None = None
    predict_shape: tuple[int, ...] = (-1,)
    compiled: CompiledModel | TreeLibrary | None = None  # the verified compiled model
    compiled_status: CompiledStatus | None = None  # what answers, and why
    compiled_wanted: int | None = None  # ONNX Runtime threads, when a compiled one may answer
    trees_wanted: bool = False  # a scoring job's files: the tree library may answer

    @property
    def runtime(self) -> str:
        """What answers: ``onnxruntime`` (compiled), the native flavor, or ``pyfunc``."""
        if self.compiled is not None:
            return self.compiled.runtime
        return self.native.flavor if self.native is not None else "pyfunc"

    def compiled_view(self) -> dict[str, str]:
        """What answers and why, for metadata: ``runtime``, ``compiled`` (verified,
        pending, slower, off, none, failed, refused) and ``compiled_reason``."""
        status = self.compiled_status
        if status is None:
            return {"runtime": self.runtime}
        view = {"runtime": self.runtime, "compiled": status.compiled}
        if status.reason:
            view["compiled_reason"] = status.reason
        return view

    @property
    def task(self) -> str | None:
        return self.native.task if self.native is not None else None

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The labels of ``predict_proba``'s columns, in order (a classifier's)."""
        return self.native.classes if self.native is not None else None

    @cached_property
    def extra_outputs(self) -> Mapping[str, tuple[Callable[[Any], Any], int]]:
        """Outputs besides ``predict`` a V2 request may name: {"predict_proba": (fn,
        classes)}, for a classifier only."""
        native = self.native
        if native is None or native.predict_proba is None or not native.classes:
            return {}
        return {"predict_proba": (self._predict_proba, len(native.classes))}

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return ("predict", *self.extra_outputs)

    def close(self) -> None:
        """Remove the files downloaded for this version (the model stays in memory for
        requests still holding it). Safe to call more than once."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def row_aligned(self) -> bool:
        """Whether rows can be merged across requests and split again (batching)."""
        return self.schema is not None

    def predict(self, data: Any, params: Mapping[str, Any] | None = None,
                outputs: tuple[str, ...] = ()) -> Any:
        """Score a model input (DataFrame / ndarray). Model refusals are the client's to fix
        (4xx); anything else is a server error and propagates. With ``outputs`` (names
        from :attr:`output_names`): a dict of each named output."""
        compiled = self.compiled
        if compiled is not None and not isinstance(data, np.ndarray):
            answer = _refusing(lambda d: compiled.run_frame(d, outputs or ("predict",)), data)
            return answer if outputs else answer["predict"]
        if outputs:
            return {name: self._output(name, data, params) for name in outputs}
        native = self.native
        if native is None:
            return self._predict_pyfunc(data, params)
        # params: the native flavors' pyfuncs ignore them (a model whose signature declares
        # some is served through pyfunc)
        if self.takes_arrays and native.arrays is not None:
            return _refusing(native.arrays.predict, _array(data))
        return _refusing(native.predict, data)

    def _predict_proba(self, data: Any) -> Any:
        native = self.native
        if native is None or native.predict_proba is None:  # extra_outputs offers it only then
            raise InvalidInput("outputs", f"model {self.uri} has no predict_proba")
        if self.takes_arrays and native.arrays is not None and native.arrays.predict_proba:
            return _refusing(native.arrays.predict_proba, _array(data))
        return _refusing(native.predict_proba, data)

    def _output(self, name: str, data: Any, params: Mapping[str, Any] | None) -> Any:
        if name == "predict":
            return self.predict(data, params)
        fn, _ = self.extra_outputs[name]
        return fn(data)

    def _predict_pyfunc(self, data: Any, params: Mapping[str, Any] | None) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            if params:
                return self.pyfunc.predict(data, params=dict(params))
            return self.pyfunc.predict(data)
        except MlflowException as err:
            raise ModelRejectedInput(err.message) from err
        except (ValueError, TypeError, KeyError) as err:
            raise ModelRejectedInput(f"{type(err).__name__}: {err}") from err

    def predict_table(self, table: Table, params: Mapping[str, Any] | None = None,
                      outputs: tuple[str, ...] = ()) -> Any:
        """Score checked input; with ``outputs``, a dict of each named output."""
        compiled = self.compiled
        if compiled is not None:
            answer = _refusing(lambda t: compiled.run(t, outputs or ("predict",)), table)
            return answer if outputs else answer["predict"]
        if outputs:
            return self.predict(table.to_model_input(), params, outputs=outputs)
        if self.takes_arrays and table.block is not None:
            return self.predict(table.block, params)
        return self.predict(table.to_model_input(), params)

    def warm(self, *, compiled_later: bool = False) -> None:
        """Score the input example (or one synthetic row) so the first request is fast and
        a model that cannot score fails here, before it gets traffic. A native model's
        array calls are tried here (in the process that serves: a server's workers each
        warm their copy, after the fork). The compiled model is opened here too, unless
        ``compiled_later``: then :meth:`open_compiled` does it."""
        table = self.example
        if table is None and self.schema is not None:
            table = self.schema.synthetic_rows()
        if table is None:
            log.warning("model %s has no signature and no input example; not warmed", self.uri)
            return
        if self.native is not None and not self.takes_arrays:
            self.takes_arrays = try_arrays(self.native, table)
        if self.compiled_wanted is not None:
            if compiled_later and compiled_module.worth_opening(self.local_path):
                self.compiled_status = CompiledStatus(
                    self.runtime, "pending", "the compiled model is opened and verified "
                    "again once the server is ready; the original answers until then")
            else:  # asked to open it now, or there is nothing ONNX Runtime would open
                self._open_compiled(table)
        result = self.predict_table(table)
        if self.row_aligned and _length(result) != table.rows:
            self.schema = None  # answers are not one per row: never batch this model
        if isinstance(result, np.ndarray) and result.ndim:
            self.predict_dtype = result.dtype
            self.predict_shape = (-1, *result.shape[1:])


    def open_compiled(self) -> None:
        """Open the compiled model ``warm(compiled_later=True)`` left for later, while the
        original answers requests; once verified it answers the next call. Nothing to do
        when there is none to open. A failure leaves the original answering, and says why."""
        if self.compiled_wanted is None:
            return
        try:
            self._open_compiled(self.example)
        except Exception as err:  # the original keeps answering, whatever went wrong here
            self.compiled_status = CompiledStatus(self.runtime, "failed", f"opening the "
                                                  f"compiled model failed: "
                                                  f"{type(err).__name__}: {err}")
            log.warning("%s: compiled model not used: %s", self.uri, self.compiled_status.reason)

    def _open_compiled(self, example: Table | None) -> None:
        """Use the version's compiled model when it was verified and answers as the original
        on the input example and synthetic rows now (in the process that serves: after a
        server's fork, as array calls are)."""
        threads, self.compiled_wanted = self.compiled_wanted, None
        native, schema = self.native, self.schema
        if native is None or schema is None or schema.tensor is not None or threads is None:
            self.compiled_status = CompiledStatus(self.runtime, "none", "a compiled model "
                                                  "takes named columns and answers each row")
            return
        outputs = self.output_names

        def original(table: Table, names: tuple[str, ...]) -> Mapping[str, Any]:
            return {n: np.asarray(self._output(n, table.to_model_input(), None)) for n in names}

        check = compiled_module.check_rows(schema, self.example or example)
        self.compiled, self.compiled_status = compiled_module.open_verified(
            self.local_path, original, check, outputs, threads=threads, flavor=native.flavor)
        status = self.compiled_status
        if self.compiled is not None:
            log.info("%s: compiled model verified again at load; ONNX Runtime answers", self.uri)
            if self.trees_wanted:
                self._open_trees(original, check, threads)
        elif status.compiled in ("refused", "failed"):
            log.warning("%s: compiled model not used (%s): %s", self.uri, status.compiled,
                        status.reason)


    def _open_trees(self, original: compiled_module.Original, check: Table,
                    threads: int) -> None:
        """For a scoring job's files, the version's tree library in place of the graph when
        it was built and is verified again now (:mod:`ctcd.serving.trees`)."""
        assert isinstance(self.compiled, CompiledModel) and self.compiled_status is not None
        trees, why = open_verified_trees(self.local_path, self.compiled.manifest, original,
                                         check, self.output_names, threads=threads)
        if trees is not None:
            self.compiled = trees
            self.compiled_status = CompiledStatus(trees.runtime, "verified", why)
            log.info("%s: tree library verified again at load; tl2cgen answers", self.uri)
        elif why:
            graph = self.compiled_status
            self.compiled_status = CompiledStatus(graph.runtime, graph.compiled,
                                                  f"{graph.reason}; {why}")
            log.info("%s: %s", self.uri, why)


def _refusing(call: Callable[[Any], Any], data: Any) -> Any:
    try:
        return call(data)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelRejectedInput(f"{type(err).__name__}: {err}") from err


def _array(data: Any) -> Any:
    return data if isinstance(data, np.ndarray) else data.to_numpy()  # one block: a view


def load(model_uri: str, *, download_dir: Path | None = None, compiled: bool | None = None,
         compiled_threads: int | None = None, trees: bool = False) -> LoadedModel:
    """Download and load a model; raise ModelLoadError saying why it could not be.
    ``compiled`` (default: ``CTCD_COMPILED``, on): answer with the version's verified
    compiled model, checked again at warm-up, on ``compiled_threads`` ONNX Runtime threads
    (default ``CTCD_COMPILED_THREADS``, 1). ``trees``: the model scores files (large
    chunks), so its tree library answers in place of the graph when it has one."""
    dst = Path(tempfile.mkdtemp(prefix="ctcd-model-", dir=download_dir))
    try:
        local = fetch(model_uri, dst / "model")
        if local is None:
            local = _mlflow_download(model_uri, dst)
        try:
            meta = yaml.safe_load((local / "MLmodel").read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ModelLoadError(model_uri, f"unreadable MLmodel file: {err}") from err
        schema = InputSchema.from_signature_json((meta.get("signature") or {}).get("inputs"))
        native = load_native(model_uri, local, meta, schema) if schema is not None else None
        pyfunc = None if native is not None else _load_pyfunc(model_uri, local)
        example = _load_example(model_uri, local, meta, schema)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    workdir: Path | None = dst
    if not local.is_relative_to(dst):  # a local model directory, used in place
        shutil.rmtree(dst, ignore_errors=True)
        workdir = None
    if native is not None:
        log.info("%s: %s model (%s), served natively", model_uri, native.flavor,
                 native.task or "task not known")
    loaded = LoadedModel(uri=model_uri, local_path=local, schema=schema, example=example,
                         native=native, pyfunc=pyfunc, workdir=workdir)
    use = compiled_module.enabled_by_env() if compiled is None else compiled
    runtime = native.flavor if native is not None else "pyfunc"
    if not use:
        loaded.compiled_status = CompiledStatus(runtime, "off", "compiled models are turned off")
    elif native is None:
        loaded.compiled_status = CompiledStatus(runtime, "none", "served through pyfunc")
    else:
        loaded.compiled_wanted = (compiled_module.threads_by_env() if compiled_threads is None
                                  else compiled_threads)
        loaded.compiled_status = CompiledStatus(runtime, "none", "not warmed yet")
        loaded.trees_wanted = trees
    return loaded


def _mlflow_download(model_uri: str, dst: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                        dst_path=str(dst)))
    except MlflowException as err:
        raise ModelLoadError(model_uri, err.message) from err
    except OSError as err:
        raise ModelLoadError(model_uri, f"{type(err).__name__}: {err}") from err


def _load_pyfunc(model_uri: str, local: Path) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(str(local))
    except MlflowException as err:
        raise ModelLoadError(model_uri, err.message) from err
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(model_uri, f"{type(err).__name__}: {err}") from err


def _load_example(model_uri: str, local: Path, meta: dict[str, Any],
                  schema: InputSchema | None) -> Table | None:
    info = meta.get("saved_input_example_info") or {}
    if schema is None or not info.get("artifact_path"):
        return None
    try:
        raw = orjson.loads((local / info["artifact_path"]).read_bytes())
        if schema.tensor is not None:
            data = raw.get("inputs", raw.get("data")) if isinstance(raw, dict) else raw
            return check_tensor(schema.tensor, data, "input_example")
        if info.get("type") == "dataframe" and isinstance(raw, dict) and "data" in raw:
            columns = raw.get("columns") or list(schema.names)
            rows = raw["data"]
            return check_columns(schema, {c: [r[i] for r in rows]
                                          for i, c in enumerate(columns)}, "input_example.")
    except (OSError, orjson.JSONDecodeError, InvalidInput, IndexError, TypeError) as err:
        log.warning("input example of %s is unusable (%s); warming with a synthetic row",
                    model_uri, err)
    return None


def _length(result: Any) -> int | None:
    try:
        return len(result)
    except TypeError:
        return None
