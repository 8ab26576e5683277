"""`offers serve` picks httptools and uvloop when installed, and keeps TCP_NODELAY either way."""

from __future__ import annotations

import asyncio
import socket

from uvicorn.importer import import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving import server


def test_httptools_and_uvloop_are_chosen_when_installed():
    assert server.http_protocol() == server.HTTPTOOLS_PROTOCOL
    assert server.event_loop() == "uvloop"
    chosen = import_from_string(server.http_protocol())
    assert issubclass(chosen, HttpToolsProtocol)
    assert issubclass(import_from_string(server.H11_PROTOCOL), H11Protocol)


class _Transport(asyncio.Transport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def get_extra_info(self, name, default=None):
        return self._sock if name == "socket" else default


def test_every_accepted_tcp_connection_gets_no_delay():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        server._no_delay(_Transport(sock))
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
