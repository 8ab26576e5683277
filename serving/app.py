"""The HTTP app: authentication, validation, the Scorer, JSON out. Nothing else.

Built by `create_app` (never at import), so each `uvicorn --workers N` process calls the factory
and loads its own Booster. There is deliberately no endpoint that lists users, returns features
or raw data, or answers "who should get this offer": that would be an advertising audience.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.home import HOME_ENV as HOME_ENV  # offers.cli imports it from here
from features.home import resolve_home
from features.online.layout import ONLINE_STORE_ENV
from features.online.stores import OnlineStoreError
from features.tracking import CHAMPION
from serving.audit import SYNC_RECORD, AuditUnavailable
from serving.auth import (
    ADMIN_TOKEN,
    API_TOKEN,
    AuthError,
    Credentials,
    Tokens,
    matches,
    unauthorized,
)
from serving.auth import read_tokens as read_tokens  # offers.cli imports it from here
from serving.experiments_api import add_experiment_routes
from serving.limits import Limits, RequestGuard, limits_from_env
from serving.requests import MAX_K, RequestError, decision_time
from serving.results import RankAllowed, RankDenied
from serving.scorer import CHANNEL_API, Scorer
from serving.watcher import ReloadWatcher

log = logging.getLogger(__name__)

DATA_DIR_ENV = "OFFERS_DATA_DIR"  # the contract tables the Scorer reads (users, consents, offers)
MODEL_ALIAS_ENV = "OFFERS_MODEL_ALIAS"
REPLAY_ENV = "OFFERS_ALLOW_PAST_NOW"  # "1": accept a past `now` (replays, synthetic data)
ONLINE_ENV = ONLINE_STORE_ENV  # a redis:// URL: users' features from that store per request
WATCH_ENV = "OFFERS_RELOAD_WATCH_S"  # seconds between looks at the watched files; 0: off
PUBLIC_DOCS_ENV = "OFFERS_PUBLIC_DOCS"  # "1": /docs, /redoc, /openapi.json without a token
DEFAULT_WATCH_S = 2.0
MAX_CANDIDATES = 1000
MAX_ID_LENGTH = 200
API_VERSION = "1"

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


class Problem(BaseModel):
    detail: Any


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


def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


def _audit_unavailable(request: Request, exc: AuditUnavailable) -> JSONResponse:
    log.error("no decision without its audit record: %s", exc)  # the path, not the user
    return JSONResponse(
        {"detail": "the audit log cannot be written; no decision was made",
         "reason_code": exc.reason_code},
        status_code=503,
    )  # fmt: skip


def _online_unavailable(request: Request, exc: OnlineStoreError) -> JSONResponse:
    log.error("online feature store: %s", exc)
    return JSONResponse(
        {"detail": "the online feature store cannot be read; no decision was recorded"},
        status_code=503,
    )


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": message, "errors": errors}, status_code=422)


EXCEPTION_HANDLERS: dict[Any, Callable[..., Any]] = {
    AuthError: unauthorized,
    RequestError: _request_error,
    AuditUnavailable: _audit_unavailable,
    OnlineStoreError: _online_unavailable,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
}

# ------------------------------------------------------------------------------ routes
# Plain functions reading the app's state (app.state.scorer, .tokens); `_add_routes` mounts them.


def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def readyz(request: Request, creds: Credentials) -> dict[str, Any]:
    """Readiness; which model, snapshot and policy this worker serves: to token holders only."""
    if creds is None or not matches(creds.credentials, request.app.state.tokens.holders):
        return {"status": "ready"}
    # The worker's pid tells an operator (and a test) which of `--workers N` answered.
    return {"status": "ready", "worker": os.getpid(), **request.app.state.scorer.state.describe()}


def rank(body: RankRequest, request: Request) -> Response:
    """Rank offers for one consenting user; a policy deny is a 403 with its reason code."""
    return _ranked(request.app.state.scorer, body)


def _ranked(scorer: Scorer, body: RankRequest) -> Response:
    result = scorer.rank(body.user_id, body.purpose, body.k, body.candidates, body.now)
    # The documented models serialise themselves (pydantic's core, no response re-validation).
    return Response(
        result.response().model_dump_json(),
        status_code=200 if result.allowed else 403,
        media_type="application/json",
    )


def fast_rank(slow: ASGIApp) -> ASGIApp:
    """/v1/rank without FastAPI's per-request machinery when the request is plainly good.

    Why: FastAPI's dependency solving, body validation and thread-pool hop cost more CPU than
    the ranking itself (py-spy, README). A request with a valid API token whose body passes
    `RankRequest` in one pydantic-core call is answered here, by the same `_ranked`; anything
    else (no or a wrong token, a body that does not validate) goes to the FastAPI route
    unchanged, which answers exactly as before (401, 422 naming the field, ...). The route's
    middleware (size limits, media types) and exception handlers run either way. Ranking runs
    on the event loop unless each request fsyncs its audit record (then in the thread pool,
    so other requests go on while the disk syncs).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        tokens: Tokens = request.app.state.tokens
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if (
            scheme.lower() != "bearer"
            or not given.strip()
            or not matches(given.strip(), tokens.api)
        ):
            await slow(scope, receive, send)
            return
        raw = await request.body()  # over OFFERS_MAX_BODY_BYTES: the guard's 413
        try:
            body = RankRequest.model_validate_json(raw)
        except ValidationError:
            await slow(scope, _replay(raw), send)
            return
        scorer: Scorer = request.app.state.scorer
        if scorer.audit.sync == SYNC_RECORD:
            response = await run_in_threadpool(_ranked, scorer, body)
        else:
            response = _ranked(scorer, body)
        await response(scope, receive, send)

    app.slow = slow  # type: ignore[attr-defined]  # the FastAPI route (tests compare the two)
    return app


def _replay(raw: bytes) -> Receive:
    """A `receive` that hands the already read body to the FastAPI route."""

    async def receive() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive


def reload(request: Request) -> JSONResponse:
    """Re-resolve the champion, snapshot, data and erasures here; other workers follow."""
    scorer: Scorer = request.app.state.scorer
    try:
        state = scorer.request_reload()
    except (LookupError, OSError, ValueError, RuntimeError) as exc:
        log.exception("reload failed; still serving %s", scorer.state.describe())
        return JSONResponse(
            {"detail": f"reload failed, still serving the previous state: {exc}"},
            status_code=503,
        )
    return JSONResponse({"status": "reloaded", **state.describe()})


def openapi(request: Request) -> JSONResponse:
    """The schema for API token holders (OFFERS_PUBLIC_DOCS=1: for anyone, with /docs)."""
    return JSONResponse(request.app.openapi())


def _add_routes(app: FastAPI, public_docs: bool) -> None:
    """Every endpoint there is (no other: never a user list, features or an audience)."""
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["ops"])
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["ops"])
    if not public_docs:  # else FastAPI serves the schema and /docs to anyone
        app.add_api_route(
            "/openapi.json", openapi, include_in_schema=False, dependencies=[API_TOKEN]
        )
    app.add_api_route(
        "/v1/rank",
        rank,
        methods=["POST"],
        tags=["rank"],
        response_model=RankAllowed,  # 200; RANK_RESPONSES: 403 RankDenied and the errors
        responses=RANK_RESPONSES,
        dependencies=[API_TOKEN],
    )
    app.add_api_route(
        "/v1/reload", reload, methods=["POST"], tags=["ops"], dependencies=[ADMIN_TOKEN]
    )
    add_experiment_routes(app)  # admin: list, create, stop experiments
    (route,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/rank"]
    route.app = fast_rank(route.app)  # same route, schema and middleware; see fast_rank


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """A ReloadWatcher while the app runs; the audit log closed when it stops.

    Its first check runs before the first request: a worker forked from a supervisor that
    loaded earlier (serving/prefork.py) reloads there if an erasure or promotion came since.
    """
    scorer: Scorer = app.state.scorer
    watch_s: float = app.state.watch_s
    first = ReloadWatcher(scorer, watch_s)
    first.check()
    watcher = first.start() if watch_s > 0 else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.stop()
        scorer.audit.close()


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
    allowed = Tokens.resolve(tokens, admin_token)
    limits = limits or limits_from_env()
    if public_docs is None:
        public_docs = os.environ.get(PUBLIC_DOCS_ENV, "") == "1"
    scorer = (scorer_factory or scorer_from_env)()
    app = FastAPI(
        lifespan=lifespan,
        title="offers",
        version=API_VERSION,
        description="Consent-first offer ranking: a policy decision first, then the user's own "
        "ranking. Never an audience, never features or raw data.",
        # Private by default: the schema and docs are served to token holders only.
        openapi_url="/openapi.json" if public_docs else None,
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.scorer = scorer
    app.state.tokens = allowed
    app.state.watch_s = (
        watch_s if watch_s is not None else float(os.environ.get(WATCH_ENV, DEFAULT_WATCH_S))
    )
    app.add_middleware(RequestGuard, limits=limits)
    _add_routes(app, public_docs)
    return app


def scorer_from_env() -> Scorer:
    """OFFERS_HOME (settings), OFFERS_DATA_DIR and OFFERS_MODEL_ALIAS, as `offers serve` sets them."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise RuntimeError(f"set {DATA_DIR_ENV} to the folder with users, consents and offers")
    return Scorer(
        resolve_home(),
        Path(data_dir),
        os.environ.get(MODEL_ALIAS_ENV, CHAMPION),
        channel=CHANNEL_API,
        allow_past_now=os.environ.get(REPLAY_ENV, "") == "1",
        online=os.environ.get(ONLINE_ENV) or None,
    )


def app_from_env() -> FastAPI:
    """The uvicorn factory (`serving.app:app_from_env`): one per worker process."""
    return create_app()
