"""uvicorn's HTTP protocols with TCP_NODELAY on every accepted connection, and the choice of one.

Why TCP_NODELAY: with `--workers N` uvicorn binds the listening socket itself (protocol number
0), and asyncio only sets TCP_NODELAY on sockets whose protocol reads IPPROTO_TCP. uvicorn writes
the response head and body in two writes, so Nagle holds the body until the client's delayed
ACK: every response took ~40 ms more with two workers than with one (measured: /healthz p50
0.6 ms with one worker, 44 ms with two). `offers serve` passes one of these classes as
uvicorn's `http`.

Why httptools: h11 parses HTTP in pure Python; httptools' C parser (with uvloop's event loop)
leaves more of each request's CPU time to scoring (README, serving benchmark).

Why a head limit here too: uvicorn gives httptools no limit on the request line and headers
(`h11_max_incomplete_event_size` is h11's only), so a 1 MB header was buffered whole and reached
the app. The httptools protocol answers 431 once an incomplete head passes
OFFERS_MAX_HEADER_BYTES (serving/limits.py), before the app sees anything; the app's
RequestGuard checks the complete head against the same limit. (With h11, the fallback, `offers
serve` sets `h11_max_incomplete_event_size` to the limit; uvicorn answers that with a 400.)
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.limits import headers_too_large, limits_from_env

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


def head_too_large(size: int, limit: int) -> bytes:
    """A whole 431 response, written by the protocol itself: no app, no request cycle."""
    body = json.dumps({"detail": headers_too_large(size, limit)}).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


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
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.max_head = limits_from_env().max_header
            self.head_bytes = 0  # bytes received while the current head is incomplete
            self.in_head = True

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            _no_delay(transport)
            super().connection_made(transport)

        def on_message_begin(self) -> None:
            self.head_bytes, self.in_head = 0, True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self.in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.in_head or self.transport.is_closing():
                return
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head:
                self.transport.write(head_too_large(self.head_bytes, self.max_head))
                self.transport.close()

    NoDelayHttpToolsProtocol.__qualname__ = name
    globals()[name] = NoDelayHttpToolsProtocol
    return NoDelayHttpToolsProtocol
