"""The locust user of `benchmarks/load.py`: one client asking /v1/rank as fast as it is answered.

Run by load.py (`locust -f benchmarks/locustfile.py --headless ...`), which writes the plan
(token, users, candidates, decision time) to the JSON file named by OFFERS_LOAD_PLAN. Every
answer is checked, not only its status: an allowed user gets 200 with k ranked offers, a banned
purpose gets 403 BANNED_PURPOSE; anything else counts as a failure.
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from typing import Any

from locust import FastHttpUser, constant, task

PLAN_ENV = "OFFERS_LOAD_PLAN"
K = 10


@cache
def plan() -> dict[str, Any]:
    with open(os.environ[PLAN_ENV], encoding="utf-8") as f:
        return json.load(f)


class RankClient(FastHttpUser):
    """80% warm users with 100 candidates, 10% cold-start users, 10% a banned purpose."""

    wait_time = constant(0)

    def on_start(self) -> None:
        p = plan()
        self.headers = {"Authorization": f"Bearer {p['token']}"}
        self.rng = random.Random()  # which user each request names: any order will do

    def _ask(self, name: str, user: str, purpose: str, status: int) -> None:
        p = plan()
        body = {"user_id": user, "purpose": purpose, "k": K, "now": p["now"]}
        if name != "cold":
            body["candidates"] = p["candidates"]
        with self.client.post(
            "/v1/rank", json=body, headers=self.headers, name=name, catch_response=True
        ) as response:
            answer = response.json() if response.content else {}
            if response.status_code != status:
                response.failure(f"HTTP {response.status_code}, expected {status}: {answer}")
            elif status == 200 and len(answer.get("offers", [])) != K:
                response.failure(f"{len(answer.get('offers', []))} offers, expected {K}")
            elif status == 403 and answer.get("reason_code") != "BANNED_PURPOSE":
                response.failure(f"reason {answer.get('reason_code')}, expected BANNED_PURPOSE")
            else:
                response.success()  # a 403 is the right answer to a banned purpose

    @task(8)
    def warm(self) -> None:
        self._ask("warm", self.rng.choice(plan()["warm"]), "offer_ranking", 200)

    @task(1)
    def cold(self) -> None:
        self._ask("cold", self.rng.choice(plan()["cold"]), "offer_ranking", 200)

    @task(1)
    def banned(self) -> None:
        self._ask("banned", self.rng.choice(plan()["warm"]), "targeted_advertising", 403)
