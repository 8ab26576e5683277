"""OpenAPI fuzz of POST /v1/rank with schemathesis (issue 11): no 5xx, every answer in the schema.

In process (ASGI) against the hand-made serving world, with a token, bounded and derandomized:
schema-valid requests (positive) and schema-violating ones (negative: wrong types, missing or
extra fields), each checked by schemathesis (no server error, a documented status code, content
type and body conforming to the schema, invalid data refused, missing auth refused).
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS
from serving_world import World

from serving.app import create_app

TOKEN = "t-fuzz-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 150  # per mode; about 15 s in all
# A schema-valid request may still be refused by meaning (unknown offer ids, `now` before the
# snapshot's cutoff): 422 by design, so "every valid request is accepted" does not apply here.
EXCLUDED = {"positive_data_acceptance"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_rank_finds_no_server_error_and_no_schema_violation(
    world: World, mode: GenerationMode
) -> None:
    app = create_app(world.scorer, tokens=[TOKEN])
    TestClient(app).get("/healthz")  # the app answers before the fuzzer starts
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    operation = schema["/v1/rank"]["POST"]
    checks = [check for check in CHECKS.get_all() if check.__name__ not in EXCLUDED]
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    } <= {check.__name__ for check in checks}
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=AUTH, checks=checks)
        statuses[response.status_code] += 1

    fuzz()
    print(
        f"{mode.value}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}"
    )
    assert sum(statuses.values()) >= EXAMPLES // 2  # it did run
    assert not [s for s in statuses if s >= 500]
