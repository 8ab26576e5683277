"""The HTTP app: authentication, validation, the Scorer, JSON out. Nothing else.

Built by `create_app` (never at import), so each `uvicorn --workers N` process calls the factory
and loads its own Booster. There is deliberately no endpoint that lists users, returns features
or raw data, or answers "who should get this offer": that would be an advertising audience.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.audit import AuditUnavailable
from serving.limits import Limits, RequestGuard, limits_from_env
from serving.scorer import CHANNEL_API, MAX_K, RequestError, Scorer, decision_time
from serving.watcher import ReloadWatcher

log = logging.getLogger(__name__)

TOKENS_ENV = "OFFERS_API_TOKENS"  # comma-separated bearer tokens
TOKENS_FILE_ENV = "OFFERS_API_TOKENS_FILE"  # one token per line
ADMIN_TOKEN_ENV = "OFFERS_ADMIN_TOKEN"  # for POST /v1/reload
DATA_DIR_ENV = "OFFERS_DATA_DIR"  # the contract tables the Scorer reads (users, consents, offers)
MODEL_ALIAS_ENV = "OFFERS_MODEL_ALIAS"
REPLAY_ENV = "OFFERS_ALLOW_PAST_NOW"  # "1": accept a past `now` (replays, synthetic data)
WATCH_ENV = "OFFERS_RELOAD_WATCH_S"  # seconds between looks at the watched files; 0: off
PUBLIC_DOCS_ENV = "OFFERS_PUBLIC_DOCS"  # "1": /docs, /redoc, /openapi.json without a token
DEFAULT_WATCH_S = 2.0
HOME_ENV = "OFFERS_HOME"  # as offers.settings reads it (serving may not import offers/)
DEFAULT_HOME = ".offers"
MAX_CANDIDATES = 1000
MAX_ID_LENGTH = 200
API_VERSION = "1"

# Module level: FastAPI resolves the (string) annotations of endpoints in this module's globals.
BEARER = HTTPBearer(auto_error=False)

Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]


def _instant(value: object) -> datetime | None:
    """`now` is an ISO 8601 string (naive means UTC) inside the Scorer's range; nothing else.

    A number (`1765000000`) or a bool is refused, not read as epoch seconds.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError(
            "now_type", "now must be an ISO 8601 string such as 2025-12-01T12:00:00Z"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "now_format", "now '{value}' is not an ISO 8601 instant", {"value": value}
        ) from None
    try:
        decision_time(parsed)
    except RequestError as exc:
        raise PydanticCustomError("now_out_of_range", str(exc)) from None
    return parsed


class RankRequest(BaseModel):
    """One user's request for their own ranking; unknown fields are refused, not ignored.

    Strict types: `"k": true` or `"k": "5"` is a 422 naming the field, never coerced.
    """

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    purpose: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 10
    candidates: Annotated[list[Id] | None, Field(min_length=1, max_length=MAX_CANDIDATES)] = None
    now: Annotated[datetime | None, BeforeValidator(_instant)] = Field(
        None,
        description="Decision time: ISO 8601 string (naive means UTC), from 1970-01-01 up to "
        "(not including) 2200-01-01 UTC; default: the server's clock.",
    )


class RankedOfferOut(BaseModel):
    offer_id: str
    score: float
    rank: int
    reasons: list[str]


class ModelOut(BaseModel):
    name: str
    version: str


class RankAllowed(BaseModel):
    decision: str = "allow"
    reason_code: str = "OK"
    legal_refs: list[str]
    offers: list[RankedOfferOut]
    cold_start: bool = Field(description="True when the user has no history: popularity ranking.")
    model: ModelOut
    policy_version: str
    snapshot_id: str
    request_id: str


class RankDenied(BaseModel):
    decision: str = "deny"
    reason_code: str
    legal_refs: list[str]
    policy_version: str
    request_id: str


class Problem(BaseModel):
    detail: Any


def read_tokens(env: dict[str, str] | None = None) -> list[str]:
    """API tokens from OFFERS_API_TOKENS (comma-separated) and/or OFFERS_API_TOKENS_FILE."""
    env = dict(os.environ) if env is None else env
    tokens = [t.strip() for t in env.get(TOKENS_ENV, "").split(",")]
    path = env.get(TOKENS_FILE_ENV)
    if path:
        tokens += [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [t for t in tokens if t and not t.startswith("#")]


def _matches(given: str, allowed: Sequence[str]) -> bool:
    """Constant time per token, and every token is compared (no early exit on a match)."""
    found = False
    for token in allowed:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


RANK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or invalid bearer token"},
    403: {"model": RankDenied, "description": "denied by policy: reason code, no offers"},
    413: {"model": Problem, "description": "body over OFFERS_MAX_BODY_BYTES"},
    415: {"model": Problem, "description": "a body that is not JSON"},
    422: {
        "model": Problem,
        "description": "malformed request, unknown offer ids, `now` out of range",
    },
    431: {"model": Problem, "description": "headers over OFFERS_MAX_HEADER_BYTES"},
}


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A body that is not UTF-8 is malformed input (422) like bad JSON, said plainly;
    FastAPI's own answer is a bare 400 "There was an error parsing the body"."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        detail = f"body: not UTF-8 JSON ({cause.reason} at byte {cause.start})"
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, exc)


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class _AuthError(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def create_app(
    scorer_factory: Callable[[], Scorer] | None = None,
    *,
    tokens: Sequence[str] | None = None,
    admin_token: str | None = None,
    watch_s: float | None = None,
    limits: Limits | None = None,
    public_docs: bool | None = None,
) -> FastAPI:
    """The app around one Scorer; tokens default to the environment, and none means no start.

    While the app runs (its lifespan), a ReloadWatcher reloads the Scorer within
    `watch_s` seconds of an erasure or of a reload requested from any worker. Size limits and
    whether the API docs are public default to the environment (OFFERS_MAX_*_BYTES,
    OFFERS_PUBLIC_DOCS).
    """
    api_tokens = list(tokens) if tokens is not None else read_tokens()
    if not api_tokens:
        raise RuntimeError(
            f"refusing to start without API tokens: set {TOKENS_ENV} (comma-separated) "
            f"or {TOKENS_FILE_ENV}"
        )
    admin = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV, "")
    limits = limits or limits_from_env()
    if public_docs is None:
        public_docs = os.environ.get(PUBLIC_DOCS_ENV, "") == "1"
    scorer = (scorer_factory or scorer_from_env)()

    # async: a plain def dependency would cost a thread-pool hop per request
    async def caller(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if creds is None:
            raise _AuthError("missing bearer token")
        if not _matches(creds.credentials, api_tokens):
            raise _AuthError("invalid bearer token")

    async def administrator(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if creds is None:
            raise _AuthError("missing bearer token")
        if not admin or not _matches(creds.credentials, [admin]):
            raise _AuthError(f"invalid admin token (set {ADMIN_TOKEN_ENV} to enable reloads)")

    watch_s = watch_s if watch_s is not None else float(os.environ.get(WATCH_ENV, DEFAULT_WATCH_S))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = ReloadWatcher(scorer, watch_s).start() if watch_s > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            scorer.audit.close()

    app = FastAPI(
        lifespan=lifespan,
        title="offers",
        version=API_VERSION,
        description="Consent-first offer ranking: a policy decision first, then the user's own "
        "ranking. Never an audience, never features or raw data.",
        # Private by default: the schema and docs are served to token holders only (below).
        openapi_url="/openapi.json" if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
    )
    app.state.scorer = scorer
    app.add_middleware(RequestGuard, limits=limits)

    @app.exception_handler(_AuthError)
    def _auth_error(request: Request, exc: _AuthError) -> JSONResponse:
        return _unauthorized(exc.detail)

    @app.exception_handler(RequestError)
    def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(AuditUnavailable)
    def _audit_unavailable(request: Request, exc: AuditUnavailable) -> JSONResponse:
        log.error("no decision without its audit record: %s", exc)  # the path, not the user
        return JSONResponse(
            {"detail": "the audit log cannot be written; no decision was made",
             "reason_code": exc.reason_code},
            status_code=503,
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    holders = [*api_tokens, *([admin] if admin else [])]

    @app.get("/readyz", tags=["ops"])
    def readyz(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> dict[str, Any]:
        """Readiness; which model, snapshot and policy this worker serves: to token holders only."""
        if creds is None or not _matches(creds.credentials, holders):
            return {"status": "ready"}
        return {"status": "ready", **scorer.state.describe()}

    if not public_docs:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(caller)])
        def openapi() -> JSONResponse:
            """The schema for API token holders (OFFERS_PUBLIC_DOCS=1: for anyone, with /docs)."""
            return JSONResponse(app.openapi())

    @app.post(
        "/v1/rank",
        tags=["rank"],
        response_model=RankAllowed,
        responses=RANK_RESPONSES,
        dependencies=[Depends(caller)],
    )
    def rank(body: RankRequest) -> JSONResponse:
        """Rank offers for one consenting user; a policy deny is a 403 with its reason code."""
        result = scorer.rank(body.user_id, body.purpose, body.k, body.candidates, body.now)
        return JSONResponse(
            result.response().model_dump(mode="json"), status_code=200 if result.allowed else 403
        )

    @app.post("/v1/reload", tags=["ops"], dependencies=[Depends(administrator)])
    def reload() -> JSONResponse:
        """Re-resolve the champion, snapshot, data and erasures here; other workers follow."""
        try:
            state = scorer.request_reload()
        except (LookupError, OSError, ValueError, RuntimeError) as exc:
            log.exception("reload failed; still serving %s", scorer.state.describe())
            return JSONResponse(
                {"detail": f"reload failed, still serving the previous state: {exc}"},
                status_code=503,
            )
        return JSONResponse({"status": "reloaded", **state.describe()})

    return app


def scorer_from_env() -> Scorer:
    """OFFERS_HOME (settings), OFFERS_DATA_DIR and OFFERS_MODEL_ALIAS, as `offers serve` sets them."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise RuntimeError(f"set {DATA_DIR_ENV} to the folder with users, consents and offers")
    return Scorer(
        Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser().resolve(),
        Path(data_dir),
        os.environ.get(MODEL_ALIAS_ENV, "champion"),
        channel=CHANNEL_API,
        allow_past_now=os.environ.get(REPLAY_ENV, "") == "1",
    )


def app_from_env() -> FastAPI:
    """The uvicorn factory (`serving.app:app_from_env`): one per worker process."""
    return create_app()
