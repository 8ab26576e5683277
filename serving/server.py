"""uvicorn's HTTP protocols with TCP_NODELAY on every accepted connection, and the choice of one.

Why TCP_NODELAY: with `--workers N` uvicorn binds the listening socket itself (protocol number
0), and asyncio only sets TCP_NODELAY on sockets whose protocol reads IPPROTO_TCP. uvicorn writes
the response head and body in two writes, so Nagle holds the body until the client's delayed
ACK: every response took ~40 ms more with two workers than with one (measured: /healthz p50
0.6 ms with one worker, 44 ms with two). `offers serve` passes one of these classes as
uvicorn's `http`.

Why httptools: h11 parses HTTP in pure Python; httptools' C parser (with uvloop's event loop)
leaves more of each request's CPU time to scoring (README, serving benchmark).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

H11_PROTOCOL = "serving.server:NoDelayH11Protocol"
HTTPTOOLS_PROTOCOL = "serving.server:NoDelayHttpToolsProtocol"


def _no_delay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)


def http_protocol() -> str:
    """The fastest protocol installed: httptools when present, else h11."""
    return HTTPTOOLS_PROTOCOL if importlib.util.find_spec("httptools") else H11_PROTOCOL


def event_loop() -> str:
    """uvloop when present (uvicorn's "auto" would choose it too; explicit reads better)."""
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def __getattr__(name: str) -> type:
    """NoDelayHttpToolsProtocol, defined on first use: importing uvicorn's httptools module
    needs httptools, which a platform without wheels may lack."""
    if name != "NoDelayHttpToolsProtocol":
        raise AttributeError(name)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            _no_delay(transport)
            super().connection_made(transport)

    NoDelayHttpToolsProtocol.__qualname__ = name
    globals()[name] = NoDelayHttpToolsProtocol
    return NoDelayHttpToolsProtocol
