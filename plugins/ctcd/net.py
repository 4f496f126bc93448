"""Loopback networking helpers shared by the deployers, the embedded stack and the tests."""

from __future__ import annotations

import functools
import socket
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every short-lived HTTP client of this process (health probes,
    admin calls). httpx builds a new one per client otherwise, loading the CA bundle each
    time: about 60 ms of CPU, more than the request itself, which made a page that checks
    20 servers take seconds."""
    return httpx.create_ssl_context()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a TCP socket can bind ``host:port`` now (``SO_REUSEADDR``, so a port in
    TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
