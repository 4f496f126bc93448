"""Load one model version and score checked input with it.

A model URI (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``, a local
directory) resolves through the tracking URI of the environment.

Two ways to call a model, with the same answers:

- *native*: a scikit-learn model (the ``sklearn`` flavor in skops, pickle or cloudpickle
  format, which is what this project logs) is deserialized exactly as ``mlflow.sklearn``
  does, from the flavor configuration in ``MLmodel``, and its ``predict_fn`` is called on
  the frame the signature check built. That frame already has the signature's columns,
  order and dtypes, which is all MLflow's schema enforcement would do to it. No mlflow
  import: the server starts in a fraction of the time. A bare estimator (not a pipeline)
  fitted on exactly the signature's numeric columns, in order, is given the frame's ndarray
  instead: the columns were checked and ordered by name here, and scikit-learn's own check
  of a DataFrame's names costs about a quarter of a forest's small predict.
- *pyfunc*: any other flavor goes through ``mlflow.pyfunc.load_model`` and ``predict``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from ctcd.serving.errors import InvalidInput, ModelLoadError, ModelRejectedInput
from ctcd.serving.fetch import fetch
from ctcd.serving.schema import InputSchema, Table, check_columns, check_tensor
from ctcd.serving.sklearn_flavor import load_estimator

log = logging.getLogger(__name__)

@dataclass
class LoadedModel:
    uri: str
    local_path: Path
    schema: InputSchema | None
    example: Table | None
    native: Callable[[Any], Any] | None = None  # the sklearn model's predict_fn
    pyfunc: Any = None  # mlflow.pyfunc.PyFuncModel when not native
    workdir: Path | None = None  # the download directory this version owns
    # Outputs besides ``predict`` a V2 request may name: {"predict_proba": (fn, classes)}.
    extra_outputs: Mapping[str, tuple[Callable[[Any], Any], int]] = field(default_factory=dict)
    takes_arrays: bool = False  # the native model is given ndarrays (see ``_takes_arrays``)

    @property
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
        if outputs:
            return {name: self._output(name, data, params) for name in outputs}
        if self.native is None:
            return self._predict_pyfunc(data, params)
        try:
            return self.native(self._native_input(data))  # sklearn's pyfunc ignores params
        except (ValueError, TypeError, KeyError) as err:
            raise ModelRejectedInput(f"{type(err).__name__}: {err}") from err

    def _output(self, name: str, data: Any, params: Mapping[str, Any] | None) -> Any:
        if name == "predict":
            return self.predict(data, params)
        fn, _ = self.extra_outputs[name]
        try:
            return fn(self._native_input(data))
        except (ValueError, TypeError, KeyError) as err:
            raise ModelRejectedInput(f"{type(err).__name__}: {err}") from err

    def _native_input(self, data: Any) -> Any:
        if self.takes_arrays and not isinstance(data, np.ndarray):
            return data.to_numpy()  # one block: a view, no copy
        return data

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

    def predict_table(self, table: Table, params: Mapping[str, Any] | None = None) -> Any:
        if self.takes_arrays and table.block is not None:
            return self.predict(table.block, params)
        return self.predict(table.to_model_input(), params)

    def warm(self) -> None:
        """Score the input example (or one synthetic row) so the first request is fast and
        a model that cannot score fails here, before it gets traffic."""
        table = self.example
        if table is None and self.schema is not None:
            table = self.schema.synthetic_rows()
        if table is None:
            log.warning("model %s has no signature and no input example; not warmed", self.uri)
            return
        result = self.predict_table(table)
        if self.row_aligned and _length(result) != table.rows:
            self.schema = None  # answers are not one per row: never batch this model


def load(model_uri: str, *, download_dir: Path | None = None) -> LoadedModel:
    """Download and load a model; raise ModelLoadError saying why it could not be."""
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
        estimator = load_estimator(model_uri, local, meta) if schema is not None else None
        native = _predict_fn(model_uri, estimator, meta) if estimator is not None else None
        pyfunc = None if native is not None else _load_pyfunc(model_uri, local)
        example = _load_example(model_uri, local, meta, schema)
        takes_arrays = native is not None and _takes_arrays(estimator, native, schema, example)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    workdir: Path | None = dst
    if not local.is_relative_to(dst):  # a local model directory, used in place
        shutil.rmtree(dst, ignore_errors=True)
        workdir = None
    return LoadedModel(uri=model_uri, local_path=local, schema=schema, example=example,
                       native=native, pyfunc=pyfunc, workdir=workdir,
                       extra_outputs=_extra_outputs(estimator), takes_arrays=takes_arrays)


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


def _predict_fn(model_uri: str, model: Any, meta: dict[str, Any]) -> Callable[[Any], Any]:
    pyfunc_conf = (meta.get("flavors") or {}).get("python_function") or {}
    predict_fn = getattr(model, str(pyfunc_conf.get("predict_fn") or "predict"), None)
    if not callable(predict_fn):
        raise ModelLoadError(model_uri, f"the model has no {pyfunc_conf.get('predict_fn')}()")
    return predict_fn  # type: ignore[no-any-return]


def _takes_arrays(estimator: Any, native: Callable[[Any], Any], schema: InputSchema | None,
                  example: Table | None) -> bool:
    """Whether ``estimator`` can be given ndarrays of the signature's columns instead of
    DataFrames, with the same answers and no warning: a bare estimator (a pipeline's steps
    may select columns by name) fitted on exactly the signature's columns in their order,
    all numbers of one dtype. Its ``feature_names_in_`` is then dropped (this loaded copy
    only), since scikit-learn warns when an estimator fitted with names gets an ndarray.
    Tried on the input example: any warning or a different answer keeps DataFrames."""
    import warnings

    names = getattr(estimator, "feature_names_in_", None)
    if (schema is None or schema.block_dtype is None or names is None
            or hasattr(estimator, "steps") or [str(n) for n in names] != list(schema.names)):
        return False
    frame = (example or schema.synthetic_rows()).to_model_input()
    try:
        expected = native(frame)
        del estimator.feature_names_in_
        # recorded, not raised: the filters are the process's, and other threads may be
        # serving meanwhile (a version loaded beside the live one)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = native(frame.to_numpy())
        same = not seen and np.array_equal(np.asarray(got), np.asarray(expected))
    except Exception:  # any doubt keeps DataFrames
        same = False
    if not same:
        estimator.feature_names_in_ = names
    return same


def _extra_outputs(model: Any) -> dict[str, tuple[Callable[[Any], Any], int]]:
    """``predict_proba`` of a classifier (a Pipeline has it when its last step does)."""
    classes = getattr(model, "classes_", None)
    proba = getattr(model, "predict_proba", None)  # None when unavailable (available_if)
    if model is None or classes is None or not callable(proba):
        return {}
    return {"predict_proba": (proba, len(classes))}


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
