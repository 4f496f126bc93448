"""The REST app: the prediction routes' fast path ahead of Starlette's stack, and what any
middleware added to the app sees."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.serving.conftest import fake_loader

from ctcd.serving.rest import create_app

pytestmark = pytest.mark.anyio
BODY = {"dataframe_records": [{"a": 1, "b": "x"}]}


class Seen:
    """A pure ASGI middleware that records the paths it saw and adds a header."""

    paths: ClassVar[list[str]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Seen.paths.append(scope["path"])

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-seen", b"1")]
            await send(message)

        await self.app(scope, receive, tagged)


async def _predict(app: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://model") as client:
        return [await client.post("/invocations", json=BODY),
                await client.post("/v2/models/fake/infer", json={"inputs": [
                    {"name": "a", "shape": [1], "datatype": "INT64", "data": [1]},
                    {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})]


async def test_predictions_skip_starlettes_stack_when_no_middleware(make_server: Any) -> None:
    app = create_app(make_server("fake", {"1": "fake://1"}, loader=fake_loader()))
    answers = await _predict(app)
    assert [a.status_code for a in answers] == [200, 200]
    assert app.middleware_stack is None  # built on the first request that takes it


@pytest.mark.parametrize("how", ["add_middleware", "constructor"])
async def test_middleware_added_to_the_app_runs_for_predictions(make_server: Any,
                                                                how: str) -> None:
    server = make_server("fake", {"1": "fake://1"}, loader=fake_loader())
    app = create_app(server)
    if how == "add_middleware":
        app.add_middleware(Seen)
    else:  # as Starlette(middleware=...) would have it
        app.user_middleware.insert(0, Middleware(Seen))
    Seen.paths = []
    answers = await _predict(app)
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.headers.get("x-seen") for a in answers] == ["1", "1"]
    assert Seen.paths == ["/invocations", "/v2/models/fake/infer"]
