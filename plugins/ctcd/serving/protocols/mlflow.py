"""The MLflow scoring protocol: ``POST /invocations`` with JSON or CSV.

JSON bodies hold exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``
or ``inputs``, and optionally ``params``; the answer is ``{"predictions": [...]}``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ctcd.serving.errors import InvalidInput, UnsupportedMediaType
from ctcd.serving.protocols import ScoringRequest, jsonable
from ctcd.serving.schema import InputSchema, check_columns, check_matrix, check_tensor

FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES: Final = ("application/json", "text/csv")
_SPLIT_KEYS: Final = frozenset({"columns", "data", "index"})


def decode(body: bytes, content_type: str | None, schema: InputSchema | None) -> ScoringRequest:
    mime = _media_type(content_type)
    if not body:
        raise InvalidInput("body", f"is empty; send JSON with one of {list(FORMATS)} or CSV")
    if mime == "text/csv":
        return _decode_csv(body, schema)
    return _decode_json(body, schema)


def encode(predictions: Any) -> bytes:
    return orjson.dumps({"predictions": jsonable(predictions)}, option=orjson.OPT_SERIALIZE_NUMPY)


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return "application/json"
    mime, *parameters = (p.strip() for p in content_type.split(";"))
    mime = mime.lower()
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(content_type, CONTENT_TYPES)
    if mime not in CONTENT_TYPES:
        raise UnsupportedMediaType(content_type, CONTENT_TYPES)
    return mime


def _decode_json(body: bytes, schema: InputSchema | None) -> ScoringRequest:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput("body", f"is not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidInput(
            "body", f"must be a JSON object with exactly one of {list(FORMATS)}, "
            f"got a JSON {type(doc).__name__}"
        )
    present = [k for k in FORMATS if k in doc]
    if len(present) != 1:
        raise InvalidInput(
            "body", f"needs exactly one of {list(FORMATS)}, got fields {sorted(doc)}"
        )
    unknown = sorted(set(doc) - {present[0], "params"})
    if unknown:
        raise InvalidInput(unknown[0], f"is not a field of the MLflow scoring protocol; "
                           f"allowed: one of {list(FORMATS)} and 'params'")
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("params", f"must be a JSON object, got {type(params).__name__}")
    key = present[0]
    if schema is None:
        return ScoringRequest(frame=_mlflow_parse({key: doc[key]}), params=params)
    value = doc[key]
    if schema.tensor is not None:
        data = value.get("data") if key == "dataframe_split" and isinstance(value, dict) else value
        return ScoringRequest(table=check_tensor(schema.tensor, data, key), params=params)
    if key == "dataframe_split" and isinstance(value, dict) and value.keys() <= _SPLIT_KEYS:
        columns = value.get("columns", schema.names)
        fast = check_matrix(schema, columns, value.get("data")) if isinstance(
            columns, (list, tuple)) else None
        if fast is not None:
            return ScoringRequest(table=fast, params=params)
    return ScoringRequest(table=check_columns(schema, _columns(key, value, schema), f"{key}."),
                          params=params)


def _columns(key: str, value: Any, schema: InputSchema) -> Mapping[str, Any]:
    """Any JSON input form -> ``column -> values`` (transposing rows where needed)."""
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise InvalidInput(key, "must be an object with 'columns' and 'data' (pandas "
                               "orient='split')")
        extra = sorted(set(value) - {"columns", "data", "index"})
        if extra:
            raise InvalidInput(f"{key}.{extra[0]}", "is not a field of orient='split'; "
                               "allowed: columns, data, index")
        columns, data = value.get("columns", list(schema.names)), value["data"]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InvalidInput(f"{key}.columns", "must be a list of column names")
        if len(set(columns)) != len(columns):
            raise InvalidInput(f"{key}.columns", "names a column twice")
        return _transpose_rows(f"{key}.data", data, columns)
    if isinstance(value, dict):  # columnar: {"col": [values...]}
        return value
    if not isinstance(value, list):
        raise InvalidInput(key, f"must be a list of records or an object of columns, "
                           f"got {type(value).__name__}")
    if value and not all(isinstance(r, dict) for r in value):
        raise InvalidInput(key, "must be a list of records ({column: value}); this model "
                           f"takes named columns {list(schema.names)}")
    return _transpose_records(key, value, schema.names)


def _transpose_rows(field: str, data: Any, columns: list[str]) -> dict[str, Any]:
    if not isinstance(data, list):
        raise InvalidInput(field, "must be a list of rows")
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise InvalidInput(f"{field}[{i}]", f"has {got}, expected {width} (one per column)")
    if not data:
        return {c: [] for c in columns}
    return dict(zip(columns, (list(col) for col in zip(*data, strict=False)), strict=False))


def _transpose_records(field: str, records: list[dict[str, Any]],
                       names: tuple[str, ...]) -> dict[str, Any]:
    expected = set(names)
    for i, record in enumerate(records):
        if record.keys() != expected:
            missing = sorted(expected - record.keys())
            extra = sorted(record.keys() - expected)
            what = (f"is missing column(s) {missing}" if missing
                    else f"has unexpected column(s) {extra}")
            name = (missing or extra)[0]
            raise InvalidInput(f"{field}.{name}[{i}]",
                               f"{what}; the model expects columns {list(names)}")
    if not records:
        return {n: [] for n in names}
    return {n: [r[n] for r in records] for n in names}


def _decode_csv(body: bytes, schema: InputSchema | None) -> ScoringRequest:
    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body", "is not UTF-8 text") from None
    dtypes = None
    if schema is not None and schema.tensor is None:
        dtypes = dict.fromkeys(schema.text_columns, str)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=dtypes)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise InvalidInput("body", f"is not valid CSV with a header row ({err})") from None
    if schema is None:
        return ScoringRequest(frame=frame)
    if schema.tensor is not None:
        return ScoringRequest(table=check_tensor(schema.tensor, frame.to_numpy(), "csv"))
    raw = {str(c): frame[c].to_numpy() for c in frame.columns}
    numeric = {c.name for c in schema.columns if c.kind in ("long", "integer", "float",
                                                             "double")}
    for name in numeric & raw.keys():
        column = frame[name]
        if column.dtype.kind not in "iuf":  # CSV is text: a non-number stays a string
            parsed = pd.to_numeric(column, errors="coerce")
            bad = column.notna() & parsed.isna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise InvalidInput(f"csv.{name}[{row}]",
                                   f"expected a number, got {column.iloc[row]!r}")
            raw[name] = parsed.to_numpy()
    return ScoringRequest(table=check_columns(schema, raw, "csv."))


def _mlflow_parse(doc: dict[str, Any]) -> Any:
    """No signature to check against: parse exactly as MLflow's scoring server does."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    try:
        return infer_and_parse_data(doc)
    except MlflowException as err:
        raise InvalidInput(next(iter(doc)), err.message) from None
