"""One write per HTTP response (ctcd.serving.transport)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ctcd.serving.transport import CoalescingTransport, HttpProtocol
from ctcd.stack.processes import free_port

pytestmark = pytest.mark.anyio


class Recording(asyncio.Transport):
    """Records what is written: a stand-in for the socket's transport, which cannot say
    how many writes it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_step_go_out_as_one() -> None:
    inner = Recording()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    transport.write(b"alone")
    assert transport.get_write_buffer_size() == len(b"alone")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]  # held until the step ends
    await asyncio.sleep(0)
    assert inner.writes[-1] == b"alone"
    transport.write(b"last")
    transport.close()  # what is held goes out first
    assert inner.writes[-1] == b"last" and inner.closed
    transport.write(b"after close")
    await asyncio.sleep(0)
    assert inner.writes[-1] == b"last"  # nothing written to a closed connection


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A real uvicorn server on loopback with the protocol, answering JSON and a stream
    whose body waits for an event after its headers are sent."""
    release = asyncio.Event()

    async def data(request: Request) -> Response:
        return JSONResponse({"n": int(request.query_params.get("n", "0"))})

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first;"
            await release.wait()
            yield b"second"
        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/data", data), Route("/stream", stream)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio",
                                           http=HttpProtocol, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_responses_arrive_whole_on_a_kept_alive_connection(
        served: tuple[str, asyncio.Event]) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url) as client:
        for n in range(50):
            answer = await client.get("/data", params={"n": n})
            assert answer.status_code == 200
            assert answer.json() == {"n": n}
            assert answer.headers["content-length"] == str(len(answer.content))


async def test_a_streamed_body_does_not_hold_back_its_headers(
        served: tuple[str, asyncio.Event]) -> None:
    url, release = served
    async with httpx.AsyncClient(base_url=url) as client, client.stream("GET",
                                                                  "/stream") as answer:
        # headers and the first chunk arrive while the rest waits on the server
        assert answer.status_code == 200
        chunks = answer.aiter_raw()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert first == b"first;"
        release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"second"
