"""Foreign input on the HTTP path (issue 11 items 6, 8, 9; issue 13 items 2, 9), in process.

`now` bounded (422, nothing decided, nothing recorded), strict request types, size limits
(413, 431), JSON read whatever media type curl declares, the purpose's reason code after
normalisation, and docs/readiness details for token holders only. The same limits against a
real `offers serve` process: test_http_real_server.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, World

from serving.app import MAX_CANDIDATES, MAX_ID_LENGTH, create_app
from serving.audit import AuditLog
from serving.limits import DEFAULT_MAX_BODY, Limits, limits_from_env
from serving.requests import NOW_MAX, NOW_MIN, NowOutOfRangeError, RequestError

TOKEN = "t-api-0123456789"
ADMIN = "t-admin-9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OK_BODY = {"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW}


@pytest.fixture
def client(world: World, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The defaults, whatever the environment running the tests says."""
    for name in ("OFFERS_PUBLIC_DOCS", "OFFERS_MAX_BODY_BYTES", "OFFERS_MAX_HEADER_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return TestClient(create_app(world.scorer, tokens=[TOKEN], admin_token=ADMIN))


def _records(world: World) -> list[dict]:
    return AuditLog(world.home / "audit").records()


# --- now: bounded to [1970-01-01, 2200-01-01) UTC ----------------------------------------------

OUT_OF_RANGE = [
    "9999-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "2200-01-01T00:00:00Z",  # the first instant past the range
    "2200-01-01T01:00:00+01:00",  # the same instant written in another zone
    "1969-12-31T23:59:59Z",
    "2199-12-31T23:00:00-01:00",  # 2200-01-01T00:00Z
]


@pytest.mark.parametrize("now", OUT_OF_RANGE)
@pytest.mark.parametrize("purpose", ["offer_ranking", "targeted_advertising"])
def test_now_out_of_range_is_422_named_and_decides_nothing(
    client: TestClient, world: World, now: str, purpose: str
) -> None:
    """Was a 500 (OverflowError) for the first three. A banned purpose is not recorded either:
    nothing was decided, as for every other 422 (documented in the README)."""
    before = len(_records(world))
    response = client.post(
        "/v1/rank", json={**OK_BODY, "purpose": purpose, "now": now}, headers=AUTH
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "now"] and error["type"] == "now_out_of_range"
    assert "out of range" in response.json()["detail"]
    assert len(_records(world)) == before


def test_the_last_instant_in_range_is_decided(client: TestClient, world: World) -> None:
    """2199-12-31T23:59:59.999999Z is in range: decided (u_ok's consent has long expired)."""
    now = "2199-12-31T23:59:59.999999Z"
    response = client.post("/v1/rank", json={**OK_BODY, "now": now}, headers=AUTH)
    assert response.status_code == 403 and response.json()["reason_code"] == "CONSENT_EXPIRED"
    assert _records(world)[-1]["decided_at"] == "2199-12-31T23:59:59.999999+00:00"


@pytest.mark.parametrize(
    "now",
    [
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(2300, 1, 1),  # naive means UTC
        NOW_MAX,
        NOW_MIN - timedelta(microseconds=1),
    ],
)
def test_the_scorer_refuses_now_out_of_range_with_a_value_error(world: World, now) -> None:
    scorer = world.scorer()
    before = len(_records(world))
    with pytest.raises(NowOutOfRangeError, match="out of range") as caught:
        scorer.rank("u_ok", "targeted_advertising", now=now)
    assert isinstance(caught.value, RequestError) and isinstance(caught.value, ValueError)
    with pytest.raises(NowOutOfRangeError):
        scorer.rank_many(["u_ok", "u_cold"], "offer_ranking", now=now)
    assert len(_records(world)) == before


def test_score_batch_refuses_now_out_of_range(world: World, tmp_path) -> None:
    from serving.batch import score_batch

    out = tmp_path / "scores.parquet"
    with pytest.raises(NowOutOfRangeError):
        score_batch(world.home, world.data, out, now=datetime(2300, 1, 1, tzinfo=UTC))
    assert not out.exists()


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ("2300-01-01T00:00:00Z", "out of range"),
        ("9999-12-31T23:59:59Z", "out of range"),
        ("0001-01-01T00:00:00+01:00", "is not an ISO 8601 instant"),
    ],
)
def test_score_batch_cli_names_the_bad_now_in_one_line(
    world: World, tmp_path, monkeypatch: pytest.MonkeyPatch, now: str, message: str
) -> None:
    from typer.testing import CliRunner

    from offers.cli import app

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    out = tmp_path / "scores.parquet"
    args = ["score-batch", "--out", str(out), "--data", str(world.data), "--now", now]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--now" in result.output and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


# --- strict types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("k", True, "int_type"),
        ("k", "5", "int_type"),
        ("k", 5.0, "int_type"),
        ("now", 1765000000, "now_type"),
        ("now", "1765000000", "now_format"),
        ("now", True, "now_type"),
        ("now", "yesterday", "now_format"),
        ("user_id", 123, "string_type"),
        ("purpose", ["offer_ranking"], "string_type"),
        ("candidates", [1], "string_type"),
    ],
)
def test_no_silent_coercion_the_field_is_named(
    client: TestClient, world: World, field: str, value: object, error_type: str
) -> None:
    before = len(_records(world))
    response = client.post("/v1/rank", json={**OK_BODY, field: value}, headers=AUTH)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["loc"][:2] == ["body", field] and error["type"] == error_type
    assert f"body.{field}" in response.json()["detail"]
    assert len(_records(world)) == before


@pytest.mark.parametrize(
    "now", ["2025-06-10T12:00:00", "2025-06-10T12:00:00Z", "2025-06-10T14:00:00+02:00"]
)
def test_now_is_an_iso_string_and_naive_means_utc(client: TestClient, world: World, now: str):
    response = client.post("/v1/rank", json={**OK_BODY, "now": now}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert _records(world)[-1]["decided_at"] == "2025-06-10T12:00:00+00:00"


# --- purpose: the reason code after case/space normalisation -----------------------------------


@pytest.mark.parametrize(
    ("purpose", "reason"),
    [
        ("TARGETED_ADVERTISING", "BANNED_PURPOSE"),
        (" targeted_advertising", "BANNED_PURPOSE"),
        ("Audience Export", "BANNED_PURPOSE"),
        ("FRAUD_ALERT", "PURPOSE_NOT_SERVED"),
        ("OFFER_RANKING", "UNKNOWN_PURPOSE"),  # fail closed: only the exact spelling is served
        (" offer_ranking", "UNKNOWN_PURPOSE"),
    ],
)
def test_purpose_variants_are_denied_with_the_right_reason_and_recorded(
    client: TestClient, world: World, purpose: str, reason: str
) -> None:
    response = client.post("/v1/rank", json={**OK_BODY, "purpose": purpose}, headers=AUTH)
    assert response.status_code == 403 and response.json()["reason_code"] == reason
    record = _records(world)[-1]
    assert (record["purpose"], record["reason_code"]) == (purpose, reason)  # as given


def test_policy_explain_agrees_on_a_variant_of_a_banned_purpose(world: World, monkeypatch):
    from typer.testing import CliRunner

    from offers.cli import app

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    args = ["policy", "explain", "--user", "u_ok", "--purpose", "TARGETED_ADVERTISING"]
    result = CliRunner().invoke(app, [*args, "--data", str(world.data), "--at", NOW])
    assert result.exit_code == 1, result.output  # deny
    assert "BANNED_PURPOSE" in result.output


# --- sizes: 413 for the body, 431 for the headers ----------------------------------------------


def test_a_body_over_the_limit_is_413_before_any_work(client: TestClient, world: World) -> None:
    before = len(_records(world))
    body = json.dumps({**OK_BODY, "pad": "x" * DEFAULT_MAX_BODY}).encode()
    response = client.post(
        "/v1/rank", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "OFFERS_MAX_BODY_BYTES" in response.json()["detail"]
    assert response.headers["connection"] == "close"
    assert len(_records(world)) == before


def test_a_streamed_body_is_cut_at_the_limit(world: World) -> None:
    client = TestClient(create_app(world.scorer, tokens=[TOKEN], limits=Limits(max_body=1000)))

    def chunks():  # no Content-Length: chunked
        yield json.dumps(OK_BODY).encode()[:-1]
        for _ in range(50):
            yield b" " * 100
        yield b"}"

    response = client.post(
        "/v1/rank", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "1000 bytes" in response.json()["detail"]


def test_the_largest_valid_ascii_request_fits_the_default_limit(client: TestClient) -> None:
    ids = [f"{i:0{MAX_ID_LENGTH}d}" for i in range(MAX_CANDIDATES)]
    body = {**OK_BODY, "user_id": "u" * MAX_ID_LENGTH, "k": 100, "candidates": ids}
    assert len(json.dumps(body, separators=(",", ":"))) < DEFAULT_MAX_BODY
    response = client.post("/v1/rank", json=body, headers=AUTH)
    assert response.status_code == 422  # read and parsed: the ids are not in the catalogue
    assert "unknown candidate offer ids" in response.json()["detail"]


def test_a_one_megabyte_authorization_header_is_431_not_401(client: TestClient) -> None:
    headers = {"Authorization": "Bearer " + "x" * 1_000_000}
    response = client.post("/v1/rank", json=OK_BODY, headers=headers)
    assert response.status_code == 431
    assert "OFFERS_MAX_HEADER_BYTES" in response.json()["detail"]


def test_limits_come_from_the_environment_and_bad_values_are_named() -> None:
    env = {"OFFERS_MAX_BODY_BYTES": "2048", "OFFERS_MAX_HEADER_BYTES": " 4096 "}
    assert limits_from_env(env) == Limits(max_body=2048, max_header=4096)
    assert limits_from_env({}) == Limits(max_body=256 * 1024, max_header=16 * 1024)
    for bad in ("0", "-1", "64k", "1e6"):
        with pytest.raises(RuntimeError, match=f"OFFERS_MAX_BODY_BYTES='{bad}'"):
            limits_from_env({"OFFERS_MAX_BODY_BYTES": bad})


def test_a_configured_header_limit_applies(world: World) -> None:
    client = TestClient(create_app(world.scorer, tokens=[TOKEN], limits=Limits(max_header=600)))
    assert client.post("/v1/rank", json=OK_BODY, headers=AUTH).status_code == 200
    padded = {**AUTH, "X-Padding": "p" * 600}
    assert client.post("/v1/rank", json=OK_BODY, headers=padded).status_code == 431


# --- the body is JSON whatever curl declares ---------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "text/plain; charset=utf-8"]
)
def test_a_json_body_is_read_as_json_without_the_json_content_type(
    client: TestClient, content_type: str | None
) -> None:
    """curl -d sends application/x-www-form-urlencoded: the README's curl used to get 422."""
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/v1/rank", content=json.dumps(OK_BODY).encode(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "allow"


def test_a_form_body_is_still_refused_with_a_clear_message(client: TestClient) -> None:
    headers = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post(
        "/v1/rank", content=b"user_id=u_ok&purpose=offer_ranking", headers=headers
    )
    assert response.status_code == 422 and "JSON decode error" in response.json()["detail"]


def test_a_body_that_is_not_utf8_is_422_said_plainly(client: TestClient) -> None:
    """Found by the fuzzer (test_fuzz.py): FastAPI answered an undocumented bare 400."""
    headers = {**AUTH, "Content-Type": "application/json"}
    response = client.post("/v1/rank", content=b'{"user_id": "\xff"}', headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"] == "body: not UTF-8 JSON (invalid start byte at byte 13)"


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "application/xml"])
def test_other_media_types_are_415_naming_the_fix(client: TestClient, content_type: str) -> None:
    headers = {**AUTH, "Content-Type": content_type}
    response = client.post("/v1/rank", content=json.dumps(OK_BODY).encode(), headers=headers)
    assert response.status_code == 415
    assert "send Content-Type: application/json" in response.json()["detail"]


# --- docs, schema and readiness details: token holders only unless OFFERS_PUBLIC_DOCS=1 -------


def test_by_default_docs_are_off_and_schema_and_details_need_a_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/readyz", headers={"Authorization": "Bearer wrong"}).json() == {
        "status": "ready"
    }
    for auth in (AUTH, {"Authorization": f"Bearer {ADMIN}"}):
        ready = client.get("/readyz", headers=auth).json()
        assert ready["model"]["version"] == "1" and ready["snapshot_id"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": "Bearer wrong"}).status_code == 401
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert "/v1/rank" in schema["paths"] and "/openapi.json" not in schema["paths"]


def test_public_docs_by_setting(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFERS_PUBLIC_DOCS", "1")
    client = TestClient(create_app(world.scorer, tokens=[TOKEN]))
    assert client.get("/docs").status_code == 200
    assert "/v1/rank" in client.get("/openapi.json").json()["paths"]
    assert client.get("/readyz").json() == {"status": "ready"}  # details stay with tokens
    explicit = TestClient(create_app(world.scorer, tokens=[TOKEN], public_docs=False))
    assert explicit.get("/docs").status_code == 404
