"""The model server's HTTP API from its own OpenAPI document (``ctcd.serving.openapi``, what
``GET /openapi.json`` answers), for the demo's model (the churn data set's signature) served
with a prediction token and an admin token. Also writes the document itself."""

from __future__ import annotations

import json
from typing import Any

from scripts.docs_reference.render import code, header, schema_allowed, schema_type, table

MODEL_NAME = "churn-classifier"
DATASET = "churn"
_KINDS = {"integer": "long", "float": "double", "category": "string"}


def document() -> dict[str, Any]:
    from ctcd.data.spec import load_spec
    from ctcd.serving.openapi import document as openapi_document
    from ctcd.serving.schema import ColumnSpec, InputSchema

    spec = load_spec(DATASET)
    schema = InputSchema(columns=tuple(
        ColumnSpec(f.name, _KINDS[f.type], required=f.max_null_fraction == 0)
        for f in spec.features))
    return openapi_document(MODEL_NAME, schema, token=True, admin_token=True)


def _body(content: dict[str, Any]) -> str:
    return ", ".join(f"`{kind}`" + (f" {schema_type(value['schema'])}" if "schema" in value
                                     else "") for kind, value in content.items())


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    text = f"\n### `{method.upper()} {path}`\n\n{op.get('summary', '')}.\n\n"
    if op.get("description"):
        text += f"{op['description']}\n\n"
    security = [name for item in op.get("security", []) for name in item]
    text += f"- Auth: {', '.join(code(s) for s in security) if security else 'none'}\n"
    for param in op.get("parameters", []):
        text += (f"- {param['in']} parameter `{param['name']}`: "
                 f"{schema_type(param['schema'])} {schema_allowed(param['schema'])}".rstrip()
                 + "\n")
    if "requestBody" in op:
        text += f"- Body: {_body(op['requestBody']['content'])}\n"
    rows = [(code(status), answer.get("description", ""), _body(answer.get("content", {})))
            for status, answer in op["responses"].items()]
    return text + "\n" + table(("status", "meaning", "body"), rows)


def _schema(name: str, schema: dict[str, Any]) -> str:
    text = f"\n### `{name}`\n\n"
    if schema.get("description"):
        text += f"{schema['description']}\n\n"
    properties = schema.get("properties")
    if schema.get("type") == "object" and properties:
        required = set(schema.get("required", []))
        rows = [(code(prop), schema_type(value), "yes" if prop in required else "",
                 schema_allowed(value), value.get("description", ""))
                for prop, value in properties.items()]
        return text + table(("property", "type", "required", "allowed", "description"), rows)
    return text + "```json\n" + json.dumps(schema, indent=2) + "\n```\n"


def page(doc: dict[str, Any]) -> str:
    text = header("ctcd.serving.openapi (the server's GET /openapi.json)")
    text += (f"\nOpenAPI {doc['openapi']} document of the model server serving "
             f"`{MODEL_NAME}` (the churn data set's signature) with a prediction token and "
             "an admin token set; the whole document is [openapi.json](generated/openapi.json).\n")
    text += "\n## Operations\n"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            text += _operation(method, path, op)
    text += "\n## Security schemes\n\n" + table(
        ("name", "scheme"), [(code(name), f"{value.get('type')} {value.get('scheme', '')}")
                             for name, value in doc["components"]["securitySchemes"].items()])
    text += "\n## Schemas\n"
    for name, schema in doc["components"]["schemas"].items():
        text += _schema(name, schema)
    return text
