"""Load one model version from MLflow and score checked input with it.

A model URI (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``, a local
directory) resolves through the tracking URI of the environment. The model is called
through MLflow's pyfunc ``predict``, so its answers are exactly those of
``mlflow models serve`` for the same frame.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctcd.serving.errors import InvalidInput, ModelLoadError, ModelRejectedInput
from ctcd.serving.schema import InputSchema, Table, check_columns, check_tensor

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    uri: str
    local_path: Path
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    schema: InputSchema | None
    example: Table | None
    output_names: tuple[str, ...] | None = None

    @property
    def row_aligned(self) -> bool:
        """Whether rows can be merged across requests and split again (batching)."""
        return self.schema is not None

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Score a model input (DataFrame / ndarray). Model refusals are the client's to fix
        (4xx); anything else is a server error and propagates."""
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
    import mlflow
    from mlflow.exceptions import MlflowException

    dst = tempfile.mkdtemp(prefix="ctcd-model-", dir=download_dir)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst))
        pyfunc = mlflow.pyfunc.load_model(str(local))
    except MlflowException as err:
        raise ModelLoadError(model_uri, err.message) from err
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(model_uri, f"{type(err).__name__}: {err}") from err
    meta = pyfunc.metadata
    signature = meta.signature
    schema = None
    if signature is not None and signature.inputs is not None:
        schema = InputSchema.from_signature_json(signature.inputs.to_json())
    example = None
    if schema is not None and meta.saved_input_example_info:
        try:
            raw = meta.load_input_example(str(local))
            example = table_from_example(schema, raw)
        except (InvalidInput, OSError, ValueError) as err:
            log.warning("input example of %s is unusable (%s); warming with a synthetic row",
                        model_uri, err)
    return LoadedModel(uri=model_uri, local_path=local, pyfunc=pyfunc, schema=schema,
                       example=example)


def table_from_example(schema: InputSchema, raw: Any) -> Table:
    import pandas as pd

    if schema.tensor is not None:
        return check_tensor(schema.tensor, np.asarray(raw), "input_example")
    if isinstance(raw, dict):
        raw = pd.DataFrame(raw)
    if not isinstance(raw, pd.DataFrame):
        raise InvalidInput("input_example", "is not a table")
    return check_columns(schema, {c: raw[c].to_numpy() for c in raw.columns}, "input_example.")


def _length(result: Any) -> int | None:
    try:
        return len(result)
    except TypeError:
        return None
