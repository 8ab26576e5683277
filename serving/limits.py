"""What a request may weigh and how its body is read, checked before the app does any work.

Why: without limits a 20 MB body was read and parsed and a 1 MB `Authorization` header reached
the token check (issue 11). `RequestGuard` (an ASGI middleware) answers 431 for oversized
headers and 413 for a body over the limit: at once when `Content-Length` says so, and as soon as
a streamed (chunked) body passes it, without reading the rest. The real server also stops
reading an oversized head before it is complete (serving/server.py), so memory stays bounded.

A JSON-only API reads the body as JSON when the client sent no media type or the one curl's
`-d` and a bare `fetch` send (form, text); the body must still be a JSON object that passes the
strict request model. Any other media type is 415. (No cookie ever authenticates here, only a
bearer header a cross-site form cannot set, so reading such bodies opens no CSRF hole.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_ENV = "OFFERS_MAX_BODY_BYTES"
MAX_HEADER_ENV = "OFFERS_MAX_HEADER_BYTES"
# 256 KiB: the largest request the model accepts with ASCII ids (1,000 candidates of 200
# characters, compact JSON) is about 200 KB and fits.
DEFAULT_MAX_BODY = 256 * 1024
DEFAULT_MAX_HEADER = 16 * 1024  # request line and headers, as nginx and Node allow
READ_AS_JSON = frozenset({"", "application/x-www-form-urlencoded", "text/plain"})
CLOSE = {"Connection": "close"}  # the client may still be sending: do not keep the connection


@dataclass(frozen=True)
class Limits:
    max_body: int = DEFAULT_MAX_BODY
    max_header: int = DEFAULT_MAX_HEADER


def limits_from_env(env: Mapping[str, str] | None = None) -> Limits:
    """OFFERS_MAX_BODY_BYTES and OFFERS_MAX_HEADER_BYTES (positive integers) or the defaults."""
    env = os.environ if env is None else env
    return Limits(
        _positive(env, MAX_BODY_ENV, DEFAULT_MAX_BODY),
        _positive(env, MAX_HEADER_ENV, DEFAULT_MAX_HEADER),
    )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise RuntimeError(f"{name}={text!r}: expected a positive number of bytes")
    return int(text)


def body_too_large(limit: int) -> str:
    return f"request body over the limit of {limit} bytes (set {MAX_BODY_ENV} to change it)"


def headers_too_large(size: int, limit: int) -> str:
    return (
        f"request headers of {size} bytes are over the limit of {limit} bytes "
        f"(set {MAX_HEADER_ENV} to change it)"
    )


def head_size(scope: Scope) -> int:
    """Bytes of the request line and headers as sent (method, target, names, values, CRLFs)."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"]) + 1
    lines = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    return len(scope["method"]) + target + len(" HTTP/1.1\r\n") + lines + 2


def _media_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


class RequestGuard:
    """431 for heavy headers, 413 for a heavy body, JSON read whatever form curl sent it in."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size, limits = head_size(scope), self.limits
        if size > limits.max_header:
            await _answer(scope, receive, send, 431, headers_too_large(size, limits.max_header))
            return
        length = _content_length(scope)
        if length is not None and length > limits.max_body:
            await _answer(scope, receive, send, 413, body_too_large(limits.max_body))
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            media = _media_type(scope)
            if media in READ_AS_JSON:
                scope = _with_json_type(scope)
            elif not _is_json(media):
                detail = (
                    f"Content-Type {media!r} is not accepted: send Content-Type: application/json"
                )
                await _answer(scope, receive, send, 415, detail)
                return
        await self.app(scope, _capped(receive, limits.max_body), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


def _with_json_type(scope: Scope) -> Scope:
    headers = [(n, v) for n, v in scope["headers"] if n != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _capped(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a streamed body at `limit` bytes: FastAPI answers the 413."""
    seen = 0

    async def receive_capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, body_too_large(limit), headers=CLOSE)
        return message

    return receive_capped


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=CLOSE)(scope, receive, send)
