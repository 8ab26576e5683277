"""Bearer tokens: API tokens for ranking and the schema, one admin token for reloads.

One dependency, `RequireToken`, checks either kind (the kind is its parameter); the tokens
live on `app.state.tokens`, set by `serving.app.create_app`.

No `from __future__ import annotations` in this module: FastAPI reads the annotations of
`RequireToken.__call__` at runtime, and a callable instance has no module globals through
which FastAPI could resolve them as strings.
"""

import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

TOKENS_ENV = "OFFERS_API_TOKENS"  # comma-separated bearer tokens
TOKENS_FILE_ENV = "OFFERS_API_TOKENS_FILE"  # one token per line
ADMIN_TOKEN_ENV = "OFFERS_ADMIN_TOKEN"  # for POST /v1/reload

BEARER = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def read_tokens(env: dict[str, str] | None = None) -> list[str]:
    """API tokens from OFFERS_API_TOKENS (comma-separated) and/or OFFERS_API_TOKENS_FILE."""
    env = dict(os.environ) if env is None else env
    tokens = [t.strip() for t in env.get(TOKENS_ENV, "").split(",")]
    path = env.get(TOKENS_FILE_ENV)
    if path:
        tokens += [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [t for t in tokens if t and not t.startswith("#")]


@dataclass(frozen=True)
class Tokens:
    """Who may call: API token holders, and the admin ("" when reloads are off)."""

    api: tuple[str, ...]
    admin: str

    @classmethod
    def resolve(cls, tokens: Sequence[str] | None, admin_token: str | None) -> "Tokens":
        """The given tokens, else the environment's; no API token at all refuses to start."""
        api = tuple(tokens) if tokens is not None else tuple(read_tokens())
        if not api:
            raise RuntimeError(
                f"refusing to start without API tokens: set {TOKENS_ENV} (comma-separated) "
                f"or {TOKENS_FILE_ENV}"
            )
        admin = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV, "")
        return cls(api, admin)

    @property
    def holders(self) -> tuple[str, ...]:
        return (*self.api, *((self.admin,) if self.admin else ()))


def matches(given: str, allowed: Sequence[str]) -> bool:
    """Constant time per token, and every token is compared (no early exit on a match)."""
    found = False
    for token in allowed:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


class AuthError(Exception):
    """A missing or wrong bearer token: a 401 (see `unauthorized`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
    """The exception handler for AuthError."""
    return JSONResponse(
        {"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class RequireToken:
    """The dependency: an API token (default) or, with `admin=True`, the admin token."""

    admin: bool = False

    # async: a plain def dependency would cost a thread-pool hop per request
    async def __call__(self, request: Request, creds: Credentials) -> None:
        if creds is None:
            raise AuthError("missing bearer token")
        tokens: Tokens = request.app.state.tokens
        if not self.admin:
            if not matches(creds.credentials, tokens.api):
                raise AuthError("invalid bearer token")
        elif not tokens.admin or not matches(creds.credentials, [tokens.admin]):
            raise AuthError(f"invalid admin token (set {ADMIN_TOKEN_ENV} to enable reloads)")


API_TOKEN = Depends(RequireToken())
ADMIN_TOKEN = Depends(RequireToken(admin=True))
