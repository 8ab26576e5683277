"""One response schema: the OpenAPI document describes exactly the JSON `/v1/rank` sends.

The body is built from the pydantic models the schema is generated from (serving.results);
these tests read both ends over HTTP, so a field added to one side only fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, World

from serving.app import create_app

TOKEN = "t-api-schema"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(create_app(world.scorer, tokens=[TOKEN], admin_token="", watch_s=0))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref` (and a single-item `allOf`) to the component it names."""
    while "$ref" in node or "allOf" in node:
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return node


def _documented(schema: dict[str, Any], status: str) -> dict[str, Any]:
    content = schema["paths"]["/v1/rank"]["post"]["responses"][status]["content"]
    return _resolve(schema, content["application/json"]["schema"])


def _assert_matches(schema: dict[str, Any], documented: dict[str, Any], body: Any) -> None:
    """Same keys in the same order, every required key sent, recursively (objects, arrays)."""
    if documented.get("type") == "array":
        for item in body:
            _assert_matches(schema, _resolve(schema, documented["items"]), item)
        return
    if "properties" not in documented:
        return
    assert list(body) == list(documented["properties"])
    assert set(documented.get("required", ())) <= set(body)
    for key, value in body.items():
        _assert_matches(schema, _resolve(schema, documented["properties"][key]), value)


@pytest.mark.parametrize(
    ("user", "status"),
    [("u_ok", 200), ("u_cold", 200), ("u_revoked", 403), ("u_minor", 403)],
)
def test_openapi_response_properties_are_the_keys_the_route_returns(
    client: TestClient, user: str, status: int
) -> None:
    schema = client.get("/openapi.json", headers=AUTH).json()
    response = client.post(
        "/v1/rank", json={"user_id": user, "purpose": "offer_ranking", "now": NOW}, headers=AUTH
    )
    assert response.status_code == status
    body = response.json()
    documented = _documented(schema, str(status))
    _assert_matches(schema, documented, body)
    if status == 200:
        assert body["offers"], "the allow case must exercise the nested offer schema"
        assert "offers" in documented["properties"]
    else:
        assert "offers" not in body and "offers" not in documented["properties"]


def test_the_body_is_the_schema_models_serialised(world: World, client: TestClient) -> None:
    """The route's JSON is `RankResult.response()` as pydantic dumps it, key for key."""
    from pandas import Timestamp

    scorer = world.scorer()
    now = Timestamp(NOW).to_pydatetime()
    for user in ("u_ok", "u_revoked"):
        expected = scorer.rank(user, "offer_ranking", now=now).response().model_dump(mode="json")
        got = client.post(
            "/v1/rank", json={"user_id": user, "purpose": "offer_ranking", "now": NOW}, headers=AUTH
        ).json()
        assert {**got, "request_id": "-"} == {**expected, "request_id": "-"}
