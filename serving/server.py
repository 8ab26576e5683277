"""uvicorn's h11 protocol with TCP_NODELAY on every accepted connection.

Why: with `--workers N` uvicorn binds the listening socket itself (protocol number 0), and
asyncio only sets TCP_NODELAY on sockets whose protocol reads IPPROTO_TCP. uvicorn writes the
response head and body in two writes, so Nagle holds the body until the client's delayed ACK:
every response took ~40 ms more with two workers than with one (measured: /healthz p50 0.6 ms
with one worker, 44 ms with two). `offers serve` passes this class as uvicorn's `http`.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

IMPORT_STRING = "serving.server:NoDelayH11Protocol"


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
