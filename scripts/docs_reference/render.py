"""Markdown for the generated reference pages: tables, JSON Schema types and ranges, defaults,
and pydantic models as field tables."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]


def header(source: str) -> str:
    return (f"<!-- Generated from {source} by `python -m scripts.docs_reference` (run by "
            "`make docs`). Do not edit: change the code and run `make docs`. -->\n")


def cell(text: Any) -> str:
    """One table cell: no line breaks, pipes escaped, and ``<`` ``>`` outside code spans
    escaped (``<dataset>`` would be taken for an HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`" if text else ""


def default_text(value: Any) -> str:
    """A default as the reader types it; paths inside the checkout relative to it, so the
    page does not depend on where the checkout is."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        try:
            return code(str(value.relative_to(ROOT)))
        except ValueError:
            return code(str(value))
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, tuple | list | dict | bool | int | float):
        return code(json.loads(json.dumps(value, default=str)))
    return code(str(value)) if str(value) else '`""`'


def field_default(field: FieldInfo) -> str:
    """A field's default; one computed when read (a host name, a pid) is said to be, since
    its value here is not the reader's."""
    factory = field.default_factory
    if factory is None:
        return default_text(field.default)
    if factory in (list, dict, tuple, set, frozenset) or (
            isinstance(factory, type) and issubclass(factory, BaseModel)):
        return default_text(factory())  # type: ignore[call-arg]
    return "computed when read"


def schema_type(schema: dict[str, Any]) -> str:
    """The JSON type(s) of a JSON Schema, e.g. ``string | null``, ``array of string (date)``."""
    if "anyOf" in schema:
        return " | ".join(schema_type(option) for option in schema["anyOf"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type")
    if kind is None:
        kind = "string" if "enum" in schema and all(
            isinstance(v, str) for v in schema["enum"]) else "any"
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if text == "array" and isinstance(schema.get("items"), dict):
        text = f"array of {schema_type(schema['items'])}"
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def schema_allowed(schema: dict[str, Any]) -> str:
    """Enum values, ranges and patterns of a JSON Schema, as one short line."""
    options = schema.get("anyOf", [schema])
    parts: list[str] = []
    for option in options:
        if "enum" in option:
            parts.append(", ".join(code(v) for v in option["enum"]))
        if "const" in option:
            parts.append(code(option["const"]))
        bounds = [f"{op} {option[key]}" for key, op in (
            ("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
            ("exclusiveMaximum", "<")) if key in option]
        if bounds:
            parts.append(code(", ".join(bounds)))
        for key, word in (("minLength", "length >="), ("maxLength", "length <="),
                          ("minItems", "items >="), ("maxItems", "items <=")):
            if key in option:
                parts.append(code(f"{word} {option[key]}"))
        if "pattern" in option:
            parts.append(f"pattern {code(option['pattern'])}")
    return "; ".join(parts)


def annotation_text(annotation: Any) -> str:
    """A Python annotation, short: ``int | None``, ``list[str]``, ``Literal`` as its values."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(annotation_text(a) for a in args)
    if origin is typing.Annotated:
        return annotation_text(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else annotation_text(a) for a in args)
        return f"{name}[{inner}]" if inner else name
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def field_constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"),
                        ("min_length", "length >="), ("max_length", "length <="),
                        ("pattern", "pattern")):
            value = getattr(item, key, None)
            if value is not None:
                parts.append(f"pattern {code(value)}" if key == "pattern" else
                             code(f"{op} {value}"))
    return ", ".join(parts)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def model_tables(model: type[BaseModel], prefix: str = "", level: int = 3) -> str:
    """A pydantic model as a field table, then one section per nested model (``features[]``
    for a list of models), depth first."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = field.alias or name
        annotation = field.annotation
        sub = _models_in(annotation)
        is_list = typing.get_origin(annotation) in (list, tuple) or any(
            typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))
        path = f"{prefix}{key}" + ("[]" if is_list and sub else "")
        rows.append((code(path), annotation_text(annotation), field_default(field),
                     field_constraints(field), field.description or ""))
        nested += [(path, m) for m in sub]
    text = table(("field", "type", "default", "allowed", "description"), rows)
    for path, sub_model in nested:
        doc = " ".join((sub_model.__doc__ or "").split())
        text += f"\n{'#' * level} `{path}`\n\n" + (f"{doc}\n\n" if doc else "")
        text += model_tables(sub_model, f"{path}.", level + 1)
    return text
