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

A server starts faster still when the version's compiled model recorded the original's
answers (:mod:`ctcd.serving.recorded`): ``load(original_later=True)`` does not load the
original at all, the graph is checked against those answers at warm-up and answers from the
first request, and :meth:`LoadedModel.open_compiled` loads the original in the background
and compares the two again (the metadata says ``original: loading`` until then).
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
import yaml

from ctcd.serving import artifacts, recorded
from ctcd.serving import compiled as compiled_module
from ctcd.serving.compiled import CompiledModel, CompiledStatus
from ctcd.serving.errors import InvalidInput, ModelLoadError, ModelNotReady, ModelRejectedInput
from ctcd.serving.fetch import fetch
from ctcd.serving.flavors import NativeModel, load_native, try_arrays
from ctcd.serving.opening import Opening
from ctcd.serving.schema import InputSchema, Table
from ctcd.serving.trees import TreeLibrary

log = logging.getLogger(__name__)

@dataclass
class LoadedModel(Opening):
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
    recorded: recorded.Recorded | None = None  # the graph answers before the original loads
    original_later: Callable[[], tuple[NativeModel | None, Any]] | None = None  # its loader
    original_failed: str | None = None  # why the original loaded after start could not be

    @property
    def runtime(self) -> str:
        """What answers: ``onnxruntime`` (compiled), the native flavor, or ``pyfunc``."""
        if self.compiled is not None:
            return self.compiled.runtime
        if self.recorded is not None and self._not_loaded:
            return self.recorded.flavor
        return self.native.flavor if self.native is not None else "pyfunc"

    @property
    def _not_loaded(self) -> bool:
        """The original is not loaded (yet: the graph answered first), so what the server
        says of it comes from :attr:`recorded`."""
        return self.native is None and self.pyfunc is None

    def compiled_view(self) -> dict[str, str]:
        """What answers and why, for metadata: ``runtime``, ``compiled`` (verified,
        pending, slower, off, none, failed, refused) and ``compiled_reason``."""
        status = self.compiled_status
        if status is None:
            return {"runtime": self.runtime}
        view = {"runtime": self.runtime, "compiled": status.compiled}
        if status.reason:
            view["compiled_reason"] = status.reason
        if self.original_later is not None:
            view["original"] = "loading"
        elif self.original_failed is not None:
            view["original"] = f"failed: {self.original_failed}"
        return view

    @property
    def task(self) -> str | None:
        if self.recorded is not None and self._not_loaded:
            return self.recorded.task
        return self.native.task if self.native is not None else None

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The labels of ``predict_proba``'s columns, in order (a classifier's)."""
        if self.recorded is not None and self._not_loaded:
            return self.recorded.classes
        return self.native.classes if self.native is not None else None

    @cached_property
    def extra_outputs(self) -> Mapping[str, tuple[Callable[[Any], Any], int]]:
        """Outputs besides ``predict`` a V2 request may name: {"predict_proba": (fn,
        classes)}, for a classifier only."""
        native, classes = self.native, self.classes
        if self.recorded is not None and self._not_loaded:  # what the original will offer
            offered = "predict_proba" in self.recorded.outputs
        else:
            offered = native is not None and native.predict_proba is not None
        if not offered or not classes:
            return {}
        return {"predict_proba": (self._predict_proba, len(classes))}

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
        return self._predict_original(data, params, outputs)

    def _predict_original(self, data: Any, params: Mapping[str, Any] | None = None,
                          outputs: tuple[str, ...] = ()) -> Any:
        if outputs:
            return {name: self._output(name, data, params) for name in outputs}
        native = self.native
        if self._not_loaded:  # only the graph is loaded yet
            raise ModelNotReady(self.uri, "the original model is still loading, and only it "
                                "takes this input")
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
            return self._predict_original(data, params)
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
        if self.original_later is not None:
            self._open_first()
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


def _refusing(call: Callable[[Any], Any], data: Any) -> Any:
    try:
        return call(data)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelRejectedInput(f"{type(err).__name__}: {err}") from err


def _array(data: Any) -> Any:
    return data if isinstance(data, np.ndarray) else data.to_numpy()  # one block: a view


def load(model_uri: str, *, download_dir: Path | None = None, compiled: bool | None = None,
         compiled_threads: int | None = None, trees: bool = False,
         original_later: bool = False) -> LoadedModel:
    """Download and load a model; raise ModelLoadError saying why it could not be.
    ``compiled`` (default: ``CTCD_COMPILED``, on): answer with the version's verified
    compiled model, checked again at warm-up, on ``compiled_threads`` ONNX Runtime threads
    (default ``CTCD_COMPILED_THREADS``, 1). ``trees``: the model scores files (large
    chunks), so its tree library answers in place of the graph when it has one.
    ``original_later``: when the compiled model recorded the original's answers, leave the
    original for :meth:`LoadedModel.open_compiled` to load (a server starting up)."""
    use = compiled_module.enabled_by_env() if compiled is None else compiled
    dst = Path(tempfile.mkdtemp(prefix="ctcd-model-", dir=download_dir))
    try:
        local = fetch(model_uri, dst / "model")
        if local is None:
            local = artifacts.download(model_uri, dst)
        try:
            meta = yaml.safe_load((local / "MLmodel").read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ModelLoadError(model_uri, f"unreadable MLmodel file: {err}") from err
        schema = InputSchema.from_signature_json((meta.get("signature") or {}).get("inputs"))
        first = recorded.usable(local) if original_later and use and schema is not None and \
            schema.tensor is None else None

        def original() -> tuple[NativeModel | None, Any]:
            native = load_native(model_uri, local, meta, schema) if schema is not None else None
            return native, None if native is not None else artifacts.load_pyfunc(model_uri, local)
        native, pyfunc = original() if first is None else (None, None)
        example = artifacts.load_example(model_uri, local, meta, schema)
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
    if first is not None:
        loaded.recorded, loaded.original_later = first, original
    runtime = loaded.runtime
    if not use:
        loaded.compiled_status = CompiledStatus(runtime, "off", "compiled models are turned off")
    elif native is None and first is None:
        loaded.compiled_status = CompiledStatus(runtime, "none", "served through pyfunc")
    else:
        loaded.compiled_wanted = (compiled_module.threads_by_env() if compiled_threads is None
                                  else compiled_threads)
        loaded.compiled_status = CompiledStatus(runtime, "none", "not warmed yet")
        loaded.trees_wanted = trees
    return loaded


def _length(result: Any) -> int | None:
    try:
        return len(result)
    except TypeError:
        return None
