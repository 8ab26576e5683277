"""/v1/rank's fast path (serving.app.fast_rank) answers exactly as the FastAPI route it skips:
same status, same body (but the request id), same audit records, for good and bad requests."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from serving_world import NOW, World

from serving.app import create_app, fast_rank
from serving.audit import AuditLog

TOKEN = "t-api-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OK = {"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW}

REQUESTS = [
    (OK, AUTH),
    ({**OK, "k": 2}, AUTH),
    ({**OK, "candidates": ["o01", "o00"]}, AUTH),
    ({**OK, "user_id": "u_cold"}, AUTH),
    ({**OK, "user_id": "u_revoked"}, AUTH),
    ({**OK, "purpose": "targeted_advertising"}, AUTH),
    ({**OK, "candidates": ["o01", "nope"]}, AUTH),  # the Scorer's 422
    ({**OK, "k": "5"}, AUTH),  # the model's 422
    ({**OK, "extra": 1}, AUTH),
    ({**OK, "now": "2300-01-01T00:00:00Z"}, AUTH),
    ({"purpose": "offer_ranking"}, AUTH),
    (OK, {}),  # 401
    (OK, {"Authorization": "Bearer wrong"}),
    (OK, {"Authorization": f"Basic {TOKEN}"}),
    (OK, {"Authorization": f"bearer   {TOKEN}  "}),
]


def _client(world: World, fast: bool) -> TestClient:
    app = create_app(world.scorer, tokens=[TOKEN])
    (route,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/rank"]
    if not fast:
        route.app = route.app.slow
    return TestClient(app)


def _strip(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "request_id"}


def _records(world: World) -> list[dict]:
    drop = ("ts", "request_id")
    return [{k: v for k, v in r.items() if k not in drop} for r in AuditLog(world.home / "audit").records()]  # fmt: skip


@pytest.mark.parametrize("sync", ["interval", "record"])
def test_the_fast_path_answers_as_the_fastapi_route(world: World, monkeypatch, sync) -> None:
    monkeypatch.setenv("OFFERS_AUDIT_SYNC", sync)  # record: ranked in the thread pool
    answers = {}
    for fast in (False, True):
        client = _client(world, fast)
        before = len(_records(world))
        got = []
        for body, headers in REQUESTS:
            response = client.post("/v1/rank", json=body, headers=headers)
            got.append((response.status_code, _strip(response.json()),
                        response.headers.get("content-type")))  # fmt: skip
        answers[fast] = (got, _records(world)[before:])
    assert answers[True] == answers[False]
    statuses = [status for status, _, _ in answers[True][0]]
    assert statuses == [200, 200, 200, 200, 403, 403, 422, 422, 422, 422, 422, 401, 401, 401, 200]
    assert len(answers[True][1]) == 7  # one record per decision, none for a 422 or 401


def test_a_good_request_does_not_reach_the_fastapi_route(world: World) -> None:
    app = create_app(world.scorer, tokens=[TOKEN])
    (route,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/rank"]
    calls = []
    slow = route.app.slow

    async def counting(scope, receive, send):
        calls.append(scope["path"])
        await slow(scope, receive, send)

    route.app = fast_rank(counting)
    client = TestClient(app)
    assert client.post("/v1/rank", json=OK, headers=AUTH).status_code == 200
    assert calls == []
    assert client.post("/v1/rank", json={**OK, "k": 0}, headers=AUTH).status_code == 422
    assert client.post("/v1/rank", json=OK).status_code == 401
    assert calls == ["/v1/rank", "/v1/rank"]
