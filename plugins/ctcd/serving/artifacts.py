"""A model version's files besides the model itself: downloading them, the pyfunc of a
model no native loader takes, and the input example as checked rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from ctcd.serving.errors import InvalidInput, ModelLoadError
from ctcd.serving.schema import InputSchema, Table, check_columns, check_tensor

log = logging.getLogger(__name__)


def download(model_uri: str, dst: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                        dst_path=str(dst)))
    except MlflowException as err:
        raise ModelLoadError(model_uri, err.message) from err
    except OSError as err:
        raise ModelLoadError(model_uri, f"{type(err).__name__}: {err}") from err


def load_pyfunc(model_uri: str, local: Path) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(str(local))
    except MlflowException as err:
        raise ModelLoadError(model_uri, err.message) from err
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(model_uri, f"{type(err).__name__}: {err}") from err


def load_example(model_uri: str, local: Path, meta: dict[str, Any],
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
