"""The OpenAPI 3.1 document of the server (``GET /openapi.json``).

It describes what this server does, so that schema-driven clients and fuzzers agree with
it: security only where a token is configured, the one model name it serves, and request
bodies typed from the signature of the version that has traffic (records and rows with
exactly the signature's columns and types). The server also accepts a few forms the
document leaves out (columns in another order, columnar objects, CSV, V2 tensors whose
shape JSON Schema cannot tie to their data); everything the document allows is scored.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version as package_version
from typing import Any

from ctcd.serving.schema import InputSchema

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input; the message names the field", 401: "Missing or wrong token",
            403: "Admin API disabled on a non-loopback bind without a token",
            404: "Unknown model or version", 409: "Conflict with the current versions",
            413: "Body over the size limit", 415: "Unsupported Content-Type",
            422: "Input the model refused, or a version that failed to load",
            503: "No version is ready"}
    return {str(c): _json(_ERROR, text[c]) for c in codes}


_SAMPLES = {"name": "samples", "in": "query", "required": False,
            "description": "How many of the kept disagreeing or failed requests to include",
            "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 20}}
_REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False,
               "description": "Correlation id of the request (up to 128 printable ASCII "
               "characters); the server makes one when it is absent or empty",
               "schema": {"type": "string", "maxLength": 128, "pattern": "^[ -~]*$"}}


def _op(summary: str, ok: dict[str, dict[str, Any]], *, body: dict[str, Any] | None = None,
        errors: tuple[int, ...] = (), tags: tuple[str, ...] = (), secured: str | None = None,
        params: tuple[str, ...] = (), extra: tuple[dict[str, Any], ...] = ()
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": list(tags), "responses": {**ok,
                                                                              **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if secured:
        op["security"] = [{secured: []}]
    if params or extra:
        op["parameters"] = [*({"name": p, "in": "path", "required": True,
                               "schema": {"type": "string"}} for p in params), *extra]
    return op


_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "boolean": {"type": "boolean"}, "integer": _INT32, "long": _INT64,
    "float": {"type": "number"}, "double": {"type": "number"}, "string": {"type": "string"},
    "binary": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
}


def _mlflow_request(schema: InputSchema | None) -> dict[str, Any]:
    """Exactly one input form (+ optional params), typed by a column signature."""
    if schema is None or schema.tensor is not None:
        record: dict[str, Any] = {"type": "object", "minProperties": 1}
        row: dict[str, Any] = {"type": "array", "minItems": 1}
        columns: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    else:
        def cell(kind: str, required: bool) -> dict[str, Any]:
            one = _KIND_SCHEMAS[kind]
            return one if required else {"oneOf": [one, {"type": "null"}]}

        record = {"type": "object", "additionalProperties": False,
                  "required": [c.name for c in schema.columns if c.required],
                  "properties": {c.name: cell(c.kind, c.required) for c in schema.columns}}
        row = {"type": "array", "minItems": len(schema.columns),
               "maxItems": len(schema.columns),
               "prefixItems": [cell(c.kind, c.required) for c in schema.columns]}
        columns = {"const": list(schema.names)}
    records = {"type": "array", "minItems": 1, "items": record}
    split = {"type": "object", "required": ["data"], "additionalProperties": False,
             "properties": {"columns": columns,
                            "data": {"type": "array", "minItems": 1, "items": row}}}
    forms = {"dataframe_split": split, "dataframe_records": records, "instances": records,
             "inputs": records}
    return {"oneOf": [
        {"type": "object", "required": [key], "additionalProperties": False,
         "properties": {key: value, "params": {"type": ["object", "null"]}}}
        for key, value in forms.items()]}


@cache
def document(model_name: str, schema: InputSchema | None = None, *, token: bool = False,
             admin_token: bool = False) -> dict[str, Any]:
    """``token`` / ``admin_token``: whether the server requires them (else no security)."""
    text_ok = {"200": {"description": "OK", "content": {"text/plain": {}}}}
    versions_ok = {"200": _json({"$ref": "#/components/schemas/Versions"}, "All versions")}
    shadow_ok = {"200": _json({"$ref": "#/components/schemas/Shadow"}, "The shadow, or null")}
    predict_headers = {
        "X-Model-Name": {"schema": {"type": "string"}, "description": "Model that answered"},
        "X-Model-Version": {"schema": {"type": "string"}, "description": "Version that "
                            "answered"},
        "X-Request-ID": {"schema": {"type": "string"}, "description": "The request's "
                         "correlation id: the one sent, else one made by the server"},
        "X-Model-Runtime": {"schema": {"type": "string"}, "description": "What computed the "
                            "answer: onnxruntime (the version's verified compiled model), or "
                            "the model's own flavor (sklearn, xgboost, lightgbm, pyfunc)"},
    }
    predictions = _json({"$ref": "#/components/schemas/Predictions"}, "Predictions")
    predictions["headers"] = predict_headers
    v2_out = _json({"$ref": "#/components/schemas/V2Response"}, "Inference response")
    v2_out["headers"] = predict_headers
    predict = "predictToken" if token else None
    unauthorized = (401,) if token else ()
    v2_infer = _op("V2 inference", {"200": v2_out},
                   body={"application/json": {"schema": {"$ref":
                                                         "#/components/schemas/V2Request"}}},
                   errors=(400, *unauthorized, 404, 413, 415, 422, 503), tags=("v2",),
                   secured=predict, params=("name",), extra=(_REQUEST_ID,))
    v2_meta = _op("Model metadata", {"200": _json({"type": "object"}, "Metadata")},
                  errors=(*unauthorized, 404), tags=("v2",), secured=predict,
                  params=("name",))
    v2_ready = _op("Model readiness", {"200": _json({"type": "object"}, "Ready")},
                   errors=(*unauthorized, 404, 503), tags=("v2",), secured=predict,
                   params=("name",))
    v2_infer["description"] = (
        "Also accepts the binary tensor data extension: Content-Type "
        "application/octet-stream with an Inference-Header-Content-Length header (a JSON "
        "request of that many bytes, then the tensors named by parameters.binary_data_size) "
        "and answers binary outputs when asked (parameters.binary_data_output, or "
        "binary_data per output). JSON Schema cannot tie a tensor's shape to its data: a "
        "tensor whose data does not fill its shape is a 400.")
    for op in (v2_infer, v2_meta, v2_ready):  # the one model this server serves
        op["parameters"][0]["schema"] = {"type": "string", "enum": [model_name]}

    def versioned(op: dict[str, Any]) -> dict[str, Any]:
        out = dict(op)
        out["parameters"] = [*op["parameters"], {"name": "version", "in": "path",
                                                 "required": True, "schema": {"type": "string"}}]
        return out

    admin: dict[str, Any] = {"tags": ("admin",),
                             "secured": "adminToken" if admin_token else None}
    invocations = _op(
        "Score rows (MLflow scoring protocol)", {"200": predictions},
        body={"application/json": {"schema": {"$ref": "#/components/schemas/MlflowRequest"}}},
        errors=(400, *unauthorized, 413, 415, 422, 503), tags=("mlflow",), secured=predict,
        extra=(_REQUEST_ID,))
    invocations["description"] = (
        "Also accepts text/csv (UTF-8, a header row naming the columns), columns in any "
        "order in dataframe_split, and columnar objects {column: [values]} in instances / "
        "inputs, as MLflow's scoring server does.")
    paths: dict[str, Any] = {
        "/ping": {"get": _op("Ready when a version has traffic", text_ok, errors=(503,),
                             tags=("mlflow",))},
        "/health": {"get": _op("Same as /ping", text_ok, errors=(503,), tags=("mlflow",))},
        "/version": {"get": _op("MLflow version of the server", text_ok, tags=("mlflow",))},
        "/invocations": {"post": invocations},
        "/v2": {"get": _op("Server metadata", {"200": _json({"type": "object"}, "Metadata")},
                           tags=("v2",))},
        "/v2/health/live": {"get": _op("Liveness", {"200": _json({"type": "object"}, "Live")},
                                       tags=("v2",))},
        "/v2/health/ready": {"get": _op("Readiness", {"200": _json({"type": "object"},
                                                                   "Ready")},
                                        errors=(503,), tags=("v2",))},
        "/v2/models/{name}": {"get": v2_meta},
        "/v2/models/{name}/ready": {"get": v2_ready},
        "/v2/models/{name}/infer": {"post": v2_infer},
        "/v2/models/{name}/versions/{version}": {"get": versioned(v2_meta)},
        "/v2/models/{name}/versions/{version}/ready": {"get": versioned(v2_ready)},
        "/v2/models/{name}/versions/{version}/infer": {"post": versioned(v2_infer)},
        "/admin/versions": {
            "get": _op("List loaded versions", versions_ok, errors=(401, 403), **admin),
            "post": _op(
                "Load and warm a version into a standby slot (weight 0)",
                {"201": _json({"$ref": "#/components/schemas/Version"}, "Loaded"),
                 "200": _json({"$ref": "#/components/schemas/Version"}, "Already loaded")},
                body={"application/json": {"schema": {
                    "type": "object", "required": ["model_uri", "version"],
                    "additionalProperties": False,
                    "properties": {"model_uri": {"type": "string", "minLength": 1},
                                   "version": {"type": "string", "minLength": 1}}}}},
                errors=(400, 401, 403, 409, 422), **admin),
        },
        "/admin/versions/{version}": {"delete": _op(
            "Unload a version with weight 0", versions_ok, errors=(401, 403, 404, 409),
            params=("version",), **admin)},
        "/admin/shadow": {
            "get": _op("The shadow version and its comparison with the live one",
                       shadow_ok, errors=(400, 401, 403), extra=(_SAMPLES,), **admin),
            "put": _op(
                "Mirror a share of live requests to a loaded version with weight 0",
                shadow_ok, body={"application/json": {"schema": {
                    "$ref": "#/components/schemas/ShadowPlan"}}},
                errors=(400, 401, 403, 409), **admin),
            "delete": _op("End the shadow (the version stays loaded); its last state",
                          shadow_ok, errors=(401, 403), **admin),
        },
        "/admin/traffic": {"put": _op(
            "Set the whole traffic split at once", versions_ok,
            body={"application/json": {"schema": {
                "type": "object", "required": ["weights"], "additionalProperties": False,
                "properties": {"weights": {"type": "object", "minProperties": 1,
                                           "additionalProperties": {"type": "number",
                                                                    "minimum": 0}}}}}},
            errors=(400, 401, 403), **admin)},
        "/metrics": {"get": _op("Prometheus metrics", text_ok, tags=("operations",))},
        "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"},
                                                                    "OpenAPI")},
                                     tags=("operations",))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"ctcd model server: {model_name}",
                 "version": package_version("ctcd")},
        "paths": paths,
        "components": {"securitySchemes": {
            "predictToken": {"type": "http", "scheme": "bearer",
                             "description": "Only when the server has --token"},
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "--admin-token; optional on a loopback bind"}},
            "schemas": {**_SCHEMAS, "MlflowRequest": _mlflow_request(schema)}},
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "Predictions": {"type": "object", "required": ["predictions"],
                    "properties": {"predictions": {"type": "array"}}},
    "V2Tensor": {"type": "object", "required": ["name", "shape", "datatype", "data"],
                 "properties": {"name": {"type": "string", "minLength": 1},
                                "shape": {"type": "array", "minItems": 1,
                                          "items": {"type": "integer", "minimum": 0}},
                                "datatype": {"type": "string", "enum": [
                                    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8",
                                    "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
                                    "BYTES"]},
                                "parameters": {"type": "object"},
                                "data": {"type": "array"}}},
    "V2Request": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1,
                   "items": {"$ref": "#/components/schemas/V2Tensor"}},
        "outputs": {"type": "array"}}},
    "V2Response": {"type": "object",
                   "required": ["model_name", "model_version", "id", "outputs"],
                   "properties": {
                       "model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"}, "parameters": {"type": "object"},
                       "outputs": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/V2Tensor"}}}},
    "Version": {"type": "object", "properties": {
        "version": {"type": "string"}, "model_uri": {"type": "string"},
        "weight": {"type": "number"}, "state": {"type": "string", "enum": ["ready", "failed"]},
        "loaded_at": {"type": "string", "format": "date-time"},
        "requests": {"type": "integer"}, "errors": {"type": "integer"},
        "latency_ms_p50": {"type": ["number", "null"]},
        "latency_ms_p99": {"type": ["number", "null"]}}},
    "ShadowPlan": {
        "type": "object", "required": ["version", "mirror_percent"],
        "additionalProperties": False, "properties": {
            "version": {"type": "string", "minLength": 1,
                        "description": "A loaded version with traffic weight 0"},
            "mirror_percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                               "description": "Share of live requests copied to it"},
            "timeout_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": 600000,
                           "default": 1000, "description": "A copy not answered by then "
                           "counts as a timeout"},
            "tolerance": {"type": "number", "minimum": 0, "default": 1e-6,
                          "description": "Largest absolute difference of a number that "
                          "still agrees"},
            "window_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400,
                               "default": 60, "description": "Length of a comparison "
                               "window"}}},
    "Shadow": {"type": "object", "required": ["model_name", "shadow"], "properties": {
        "model_name": {"type": "string"},
        "shadow": {"type": ["object", "null"], "description": "The plan, `cumulative` and "
                   "`windows` of the comparison (mirrored, dropped, answered, errors, "
                   "timeouts, labels.agreement, numbers.abs_difference, latency_ms.live/"
                   "shadow), and `samples` of disagreeing or failed requests"}}},
    "Versions": {"type": "object", "properties": {
        "model_name": {"type": "string"},
        "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}}},
}
