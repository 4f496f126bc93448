"""One write per HTTP response: uvicorn's httptools protocol writes a response's status line
and headers, then its body, as two writes on the connection's transport: two system calls
and two TCP segments, each waking the client. On loopback a write also runs the receiving
side's TCP path inside the same system call: the header write was a fifth of a compiled
model server's samples under load, the body write another twelfth.

:class:`HttpProtocol` is uvicorn's protocol on a :class:`CoalescingTransport`: writes made
in one step of the event loop go out as one (a response's headers and body are sent in one
step when its body is ready, as a prediction's is). A write waits at most until the end of
the step, so a streamed body's headers are not held back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport(asyncio.Transport):
    """A transport whose first write is held until the next one (both then written as one)
    or the end of the current event-loop step, whichever comes first. Everything else is
    the wrapped transport's; closing it writes what is held first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | bytearray | memoryview | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._flush_handle = self._loop.call_soon(self.flush)
            return
        self._held = None
        self._cancel_flush()
        self._transport.write(b"".join((held, data)))

    def flush(self) -> None:
        """Write what is held now (the end of the step; before closing)."""
        held, self._held = self._held, None
        self._cancel_flush()
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def writelines(self, list_of_data: Any) -> None:
        self.flush()
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._cancel_flush()
        self._transport.abort()

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing each response in one piece (see the module)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))
