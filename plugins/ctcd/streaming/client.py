"""The producer's and reader's side of the scorer's streams, for applications, tests and
benchmarks: send rows, read predictions and dead letters back as plain dicts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import orjson
import redis

from ctcd.streaming.messages import DATA, KEY


def send(client: redis.Redis, stream: str, rows: Iterable[Mapping[str, Any]], *,
         keys: Iterable[str] | None = None, chunk: int = 1000,
         maxlen: int | None = None) -> list[str]:
    """XADD one request per row (pipelined ``chunk`` at a time); returns the entry ids."""
    ids: list[str] = []
    key_iter = iter(keys) if keys is not None else None
    pipe = client.pipeline(transaction=False)
    pending = 0
    for row in rows:
        fields: dict[Any, Any] = {DATA: orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)}
        if key_iter is not None:
            fields[KEY] = next(key_iter)
        pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
        pending += 1
        if pending == chunk:
            ids.extend(_text(i) for i in pipe.execute())
            pending = 0
    if pending:
        ids.extend(_text(i) for i in pipe.execute())
    return ids


def read(client: redis.Redis, stream: str, *, start: str = "-", chunk: int = 10_000
         ) -> Iterator[dict[str, Any]]:
    """Every entry of ``stream`` (predictions or dead letters) as a dict with its ``id``;
    ``prediction`` decoded from JSON."""
    while True:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       client.xrange(stream, min=start, max="+", count=chunk))
        for entry_id, fields in entries:
            item: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
            item["id"] = _text(entry_id)
            if "prediction" in item:
                item["prediction"] = orjson.loads(item["prediction"])
            yield item
        if len(entries) < chunk:
            return
        start = "(" + _text(entries[-1][0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
