"""The HTTP contract: the decision table one request per row, auth, 422s, reload, no audience."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, USERS_BY_REASON, World

from policy import LEGAL_REFS, Reason, policy_version
from serving.app import create_app
from serving.audit import AuditLog
from serving.auth import read_tokens

TOKEN = "t-api-0123456789"
ADMIN = "t-admin-9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(world: World) -> TestClient:
    app = create_app(world.scorer, tokens=["other-token", TOKEN], admin_token=ADMIN)
    return TestClient(app)


def _rank(client: TestClient, headers: dict | None = None, **body) -> object:
    return client.post(
        "/v1/rank", json={"now": NOW, **body}, headers=AUTH if headers is None else headers
    )


# One row per line of the decision table (spec/policy.md), in its order.
DECISION_TABLE = [
    ("u_ok", "targeted_advertising", 403, "BANNED_PURPOSE"),
    ("u_ok", "audience_export", 403, "BANNED_PURPOSE"),
    ("u_ok", "offer_rankings", 403, "UNKNOWN_PURPOSE"),
    ("u_ok", "fraud_alert", 403, "PURPOSE_NOT_SERVED"),
    ("nobody_by_this_id", "offer_ranking", 403, "NO_CONSENT"),
    ("u_noconsent", "offer_ranking", 403, "NO_CONSENT"),
    ("u_revoked", "offer_ranking", 403, "CONSENT_REVOKED"),
    ("u_expired", "offer_ranking", 403, "CONSENT_EXPIRED"),
    ("u_scope", "offer_ranking", 403, "PURPOSE_NOT_IN_SCOPE"),
    ("u_object", "offer_ranking", 403, "MARKETING_OBJECTION"),
    ("u_minor", "offer_ranking", 403, "MINOR"),
    ("u_noage", "offer_ranking", 403, "AGE_UNKNOWN"),
    ("u_ok", "offer_ranking", 200, "OK"),
]


def test_the_table_covers_every_reason_code() -> None:
    assert {row[3] for row in DECISION_TABLE} == {r.value for r in Reason}
    assert {u for u, *_ in DECISION_TABLE} >= set(USERS_BY_REASON) - {"u_cold"}


@pytest.mark.parametrize(("user", "purpose", "status", "reason"), DECISION_TABLE)
def test_decision_table_row(client: TestClient, user: str, purpose: str, status: int, reason: str):
    response = _rank(client, user_id=user, purpose=purpose, k=3)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason_code"] == reason
    assert body["policy_version"] == policy_version()
    assert body["legal_refs"] == list(LEGAL_REFS[Reason(reason)])
    if status == 403:
        assert body["decision"] == "deny"
        assert set(body) == {
            "decision",
            "reason_code",
            "legal_refs",
            "policy_version",
            "request_id",
        }
    else:
        assert body["decision"] == "allow"
        assert len(body["offers"]) == 3
        assert [o["rank"] for o in body["offers"]] == [1, 2, 3]
        scores = [o["score"] for o in body["offers"]]
        assert scores == sorted(scores, reverse=True)
        assert all(0 < len(o["reasons"]) <= 3 for o in body["offers"])
        assert body["model"] == {"name": "offer-ranker", "version": "1"}
        assert body["snapshot_id"] and len(body["request_id"]) == 32
        assert body["cold_start"] is False


def test_cold_start_user_gets_popularity_and_a_flag(client: TestClient, world: World) -> None:
    body = _rank(client, user_id="u_cold", purpose="offer_ranking", k=5).json()
    assert body["decision"] == "allow" and body["cold_start"] is True
    assert {o["offer_id"] for o in body["offers"]} <= set(world.active_offer_ids)
    assert all(o["reasons"] == ["popular with other customers"] for o in body["offers"])


def test_allow_never_returns_a_sensitive_or_inactive_offer(client: TestClient, world: World):
    every = world.offers["offer_id"].tolist()
    body = _rank(client, user_id="u_ok", purpose="offer_ranking", k=100, candidates=every).json()
    assert {o["offer_id"] for o in body["offers"]} == set(world.active_offer_ids)


def test_candidates_limit_the_ranking(client: TestClient, world: World) -> None:
    chosen = world.active_offer_ids[:2]
    body = _rank(client, user_id="u_ok", purpose="offer_ranking", candidates=chosen).json()
    assert sorted(o["offer_id"] for o in body["offers"]) == sorted(chosen)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"user_id": "u_ok", "purpose": "offer_ranking", "candidates": ["o00", "zz9"]}, "'zz9'"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "candidates": ["o00", "o00"]}, "repeated"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "k": 0}, "k"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "k": 101}, "k"),
        ({"user_id": "", "purpose": "offer_ranking"}, "user_id"),
        ({"purpose": "offer_ranking"}, "user_id"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "now": "yesterday"}, "now"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "audience": True}, "audience"),
        ({"user_id": "u_ok", "purpose": "offer_ranking", "now": "2025-01-01T00:00:00Z"}, "cutoff"),
    ],
)
def test_malformed_requests_are_422_with_a_clear_message(
    client: TestClient, body: dict, needle: str
):
    response = client.post("/v1/rank", json={"now": NOW, **body}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert needle in str(response.json()["detail"])


def test_malformed_requests_decide_nothing(client: TestClient, world: World) -> None:
    audit = AuditLog(world.home / "audit")
    before = len(audit.records())
    _rank(client, user_id="u_ok", purpose="offer_ranking", candidates=["nope"])
    _rank(client, user_id="u_ok", purpose="offer_ranking", k=0)
    assert len(audit.records()) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {ADMIN}"},
    ],  # fmt: skip
    ids=["missing", "wrong", "no-scheme", "basic", "admin-is-not-an-api-token"],
)
def test_rank_needs_a_valid_bearer_token(client: TestClient, headers: dict) -> None:
    response = _rank(client, headers=headers, user_id="u_ok", purpose="offer_ranking")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_any_configured_token_is_accepted(client: TestClient) -> None:
    headers = {"Authorization": "Bearer other-token"}
    assert (
        _rank(client, headers=headers, user_id="u_ok", purpose="offer_ranking").status_code == 200
    )


def test_refuses_to_start_without_tokens(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFERS_API_TOKENS", raising=False)
    monkeypatch.delenv("OFFERS_API_TOKENS_FILE", raising=False)
    with pytest.raises(RuntimeError, match="refusing to start"):
        create_app(world.scorer)
    with pytest.raises(RuntimeError, match="refusing to start"):
        create_app(world.scorer, tokens=[])


def test_tokens_from_environment_and_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    path.write_text("# rotated monthly\nfile-token\n\n")
    env = {"OFFERS_API_TOKENS": " a , b,,", "OFFERS_API_TOKENS_FILE": str(path)}
    assert read_tokens(env) == ["a", "b", "file-token"]


def test_health_needs_no_token_ready_details_and_openapi_do(client: TestClient) -> None:
    """Docs and readiness details: test_http_strict.py (OFFERS_PUBLIC_DOCS)."""
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    ready = client.get("/readyz", headers=AUTH).json()
    assert ready["status"] == "ready" and ready["model"]["version"] == "1" and ready["snapshot_id"]
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert "/v1/rank" in schema["paths"]
    documented = set(schema["paths"]["/v1/rank"]["post"]["responses"])
    assert documented == {"200", "401", "403", "413", "415", "422", "431"}


def test_no_endpoint_lists_users_or_builds_an_audience(client: TestClient) -> None:
    paths = {route.path for route in client.app.routes}
    api = {p for p in paths if not p.startswith(("/docs", "/redoc", "/openapi"))}
    experiments = {"/v1/experiments", "/v1/experiments/{name}", "/v1/experiments/{name}/stop"}
    assert api == {"/healthz", "/readyz", "/v1/rank", "/v1/reload", *experiments}
    for probe in ("/v1/users", "/v1/offers/o00/users", "/v1/audience", "/v1/features/u_ok"):
        assert client.get(probe, headers=AUTH).status_code in (404, 405)


def test_reload_needs_the_admin_token_and_reloads(client: TestClient, world: World) -> None:
    assert client.post("/v1/reload").status_code == 401
    assert client.post("/v1/reload", headers=AUTH).status_code == 401
    calls = len(world.calls)
    response = client.post("/v1/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200 and response.json()["status"] == "reloaded"
    assert len(world.calls) == calls + 1


def test_reload_is_disabled_without_an_admin_token(world: World) -> None:
    client = TestClient(create_app(world.scorer, tokens=[TOKEN], admin_token=""))
    assert client.post("/v1/reload", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.post("/v1/reload", headers=AUTH).status_code == 401


def test_a_failed_reload_keeps_serving_the_old_model(client: TestClient, world: World) -> None:
    world.version = "2"
    scorer = client.app.state.scorer
    scorer.model_alias = "no-such-alias"
    response = client.post("/v1/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503 and "still serving" in response.json()["detail"]
    assert _rank(client, user_id="u_ok", purpose="offer_ranking").json()["model"]["version"] == "1"


def test_offers_serve_refuses_to_start_without_tokens(world: World, monkeypatch) -> None:
    from typer.testing import CliRunner

    from offers.cli import app

    monkeypatch.delenv("OFFERS_API_TOKENS", raising=False)
    monkeypatch.delenv("OFFERS_API_TOKENS_FILE", raising=False)
    result = CliRunner().invoke(app, ["serve", "--data", str(world.data), "--port", "9"])
    assert result.exit_code == 2
    assert "refusing to start" in result.output
