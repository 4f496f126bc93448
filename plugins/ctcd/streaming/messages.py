"""The scorer's wire format on Redis Streams.

A request is a stream entry with the field ``data``, a JSON object of one row's feature
values (``{"tenure_months": 2, "contract": "month-to-month", ...}``), and optionally
``key``, any text the producer wants back with the answer (an order id, a customer id).

A prediction is an entry of the output stream: ``input_id`` (the request's entry id),
``key`` (when given), ``prediction`` (JSON), ``model_name``, ``model_version`` (the version
that scored it), ``consumer`` and ``scored_at``.

A refused request is an entry of the dead-letter stream: ``input_id``, ``reason`` (naming
the field: ``data.age: expected an integer (long), got str 'old'``), ``fields`` (the
request's fields as JSON, to inspect or replay), ``deliveries``, ``consumer`` and ``at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ctcd.serving.schema import InputSchema

DATA = "data"
KEY = "key"
_ALLOWED = frozenset({DATA, KEY})

Fields = Mapping[bytes, bytes]


class BadMessage(Exception):
    """A request that can never be scored as sent; ``reason`` says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Request:
    entry_id: str
    row: dict[str, Any]
    key: str | None


def decode(entry_id: str, fields: Fields, schema: InputSchema) -> Request:
    """One entry -> its row, or BadMessage naming the field that is wrong."""
    names = {_text(k, "field name"): v for k, v in fields.items()}
    unknown = sorted(set(names) - _ALLOWED)
    if unknown:
        raise BadMessage(f"{unknown[0]}: unexpected field; a request has '{DATA}' (a JSON "
                         f"object of feature values) and optionally '{KEY}'")
    if DATA not in names:
        raise BadMessage(f"{DATA}: missing; a request has '{DATA}' (a JSON object of feature "
                         f"values) and optionally '{KEY}'")
    try:
        row = orjson.loads(names[DATA])
    except orjson.JSONDecodeError as err:
        raise BadMessage(f"{DATA}: not valid JSON ({err})") from None
    if not isinstance(row, dict):
        raise BadMessage(f"{DATA}: expected a JSON object of feature values, got a JSON "
                         f"{_json_type(row)}")
    expected = schema.names
    missing = [n for n in expected if n not in row]
    if missing:
        raise BadMessage(f"{DATA}.{missing[0]}: missing; the model expects {list(expected)}")
    extra = sorted(set(row) - set(expected))
    if extra:
        raise BadMessage(f"{DATA}.{extra[0]}: unexpected field; the model expects "
                         f"{list(expected)}")
    key = _text(names[KEY], KEY) if KEY in names else None
    return Request(entry_id, row, key)


def columns(requests: Sequence[Request], schema: InputSchema) -> dict[str, list[Any]]:
    return {name: [r.row[name] for r in requests] for name in schema.names}


def fields_json(fields: Fields | None) -> str:
    """An entry's fields as JSON text, undecodable bytes replaced (for the dead letter)."""
    if fields is None:
        return "null"
    return orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                         for k, v in fields.items()}).decode()


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise BadMessage(f"{what}: not UTF-8 text") from None


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
