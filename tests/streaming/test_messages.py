"""Decoding requests: every way a message can be wrong gives a reason naming the field."""

from __future__ import annotations

import pytest

from ctcd.serving.schema import ColumnSpec, InputSchema
from ctcd.streaming.messages import BadMessage, decode, fields_json

SCHEMA = InputSchema(columns=(ColumnSpec("age", "long"), ColumnSpec("region", "string")))


def test_a_good_request_gives_its_row_and_key() -> None:
    request = decode("1-0", {b"data": b'{"age": 3, "region": "north"}', b"key": b"c-1"}, SCHEMA)
    assert request.row == {"age": 3, "region": "north"}
    assert request.key == "c-1" and request.entry_id == "1-0"


@pytest.mark.parametrize(("fields", "reason"), [
    ({b"data": b"{"}, "data: not valid JSON"),
    ({b"data": b'"text"'}, "data: expected a JSON object of feature values, got a JSON string"),
    ({b"data": b'{"age": 3}'}, "data.region: missing; the model expects ['age', 'region']"),
    ({b"data": b'{"age": 3, "region": "n", "x": 1}'}, "data.x: unexpected field"),
    ({b"key": b"k"}, "data: missing"),
    ({b"data": b"{}", b"extra": b"1"}, "extra: unexpected field"),
    ({b"data": b"{}", b"\xff": b"1"}, "field name: not UTF-8 text"),
])
def test_a_malformed_request_names_what_is_wrong(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode("1-0", fields, SCHEMA)
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_dead_letters_keep_the_request_as_sent() -> None:
    assert fields_json({b"data": b"\xff{"}) == '{"data":"\ufffd{"}'
