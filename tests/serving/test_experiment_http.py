"""Experiments over HTTP: admin-only changes, arms in the answers, and the same arm on two real
workers and after a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import free_port, running
from serving_world import NOW, USERS_BY_REASON, World, tiny_booster

from features.snapshot import load_snapshot
from serving.app import create_app
from serving.experiments import assign, find_experiment

TOKEN = "t-api-0123456789"
ADMIN = "t-admin-9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
BIN = Path(sys.executable).parent
DEFINITION = {
    "shares": {"champion": 0.5, "holdout": 0.5},
    "start": "2025-06-01T00:00:00Z",
    "end": "2025-07-01T00:00:00Z",
    "salt": "http-salt",
    "exploration": 0.2,
}


@pytest.fixture
def client(world: World) -> TestClient:
    return TestClient(create_app(world.scorer, tokens=[TOKEN], admin_token=ADMIN, watch_s=0))


def test_only_the_admin_token_changes_experiments(client: TestClient, world: World) -> None:
    for headers in ({}, AUTH):
        assert client.put("/v1/experiments/e1", json=DEFINITION, headers=headers).status_code == 401
        assert client.get("/v1/experiments", headers=headers).status_code == 401
        assert client.post("/v1/experiments/e1/stop", headers=headers).status_code == 401
    assert not (world.home / "experiments").exists()
    made = client.put("/v1/experiments/e1", json=DEFINITION, headers=ADMIN_AUTH)
    assert made.status_code == 200 and made.json()["shares"] == DEFINITION["shares"]
    listed = client.get("/v1/experiments", headers=ADMIN_AUTH).json()["experiments"]
    assert [e["name"] for e in listed] == ["e1"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**DEFINITION, "shares": {"champion": 0.5, "holdout": 0.6}}, "shares sum to 1.1, not 1"),
        ({**DEFINITION, "name": "other"}, "body names 'other', the path 'e1'"),
        ({**DEFINITION, "exploration": "lots"}, "exploration must be a number"),
    ],
)
def test_a_bad_definition_is_422_naming_it(client: TestClient, body: dict, message: str) -> None:
    response = client.put("/v1/experiments/e1", json=body, headers=ADMIN_AUTH)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_answers_carry_the_arm_denials_never_do(client: TestClient, world: World) -> None:
    client.put("/v1/experiments/e1", json=DEFINITION, headers=ADMIN_AUTH)
    exp = find_experiment(world.home, "e1")
    for user, reason in USERS_BY_REASON.items():
        body = client.post(
            "/v1/rank", json={"user_id": user, "purpose": "offer_ranking", "now": NOW}, headers=AUTH
        ).json()
        if reason != "OK":
            assert body["reason_code"] == reason and "experiment" not in body
            continue
        assert body["experiment"]["arm"] == assign(exp, user)
        assert body["experiment"]["personalised"] == (assign(exp, user) == "champion")
        assert all(0 < o["propensity"] <= 1 for o in body["offers"])
    stopped = client.post("/v1/experiments/e1/stop", headers=ADMIN_AUTH)
    assert stopped.status_code == 200
    assert client.post("/v1/experiments/nope/stop", headers=ADMIN_AUTH).status_code == 404


# ------------------------------------------------------------------------------ real workers

REGISTER = """
import sys
import lightgbm as lgb
import pandas as pd
from features import tracking
from features.vector import FEATURE_COLUMNS
from policy import policy_version

home = sys.argv[1]
example = pd.DataFrame([[0.0] * len(FEATURE_COLUMNS)], columns=list(FEATURE_COLUMNS))
for alias, model in ((tracking.CHAMPION, sys.argv[2]), (tracking.CHALLENGER, sys.argv[3])):
    with tracking.start_run(home, run_name=alias) as run:
        uri = run.log_ranker(lgb.Booster(model_file=model), FEATURE_COLUMNS, example)
        tags = {tracking.TAG_POLICY_VERSION: policy_version()}
        tracking.register_version(home, uri, run.run_id, tags, alias=alias)
"""


def _arms(base: str, users: list[str], rounds: int) -> dict[str, set[tuple]]:
    """Each user's (arm, shown offers) over many fresh connections (both workers answer)."""
    seen: dict[str, set[tuple]] = {u: set() for u in users}
    for _ in range(rounds):
        for user in users:
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
                body = http.post("/v1/rank", json={"user_id": user, "purpose": "offer_ranking",
                                                   "now": NOW}).json()  # fmt: skip
            arm = body.get("experiment", {}).get("arm")
            seen[user].add((arm, tuple(o["offer_id"] for o in body.get("offers", []))))
    return seen


def _workers(base: str, rounds: int = 20) -> set[str]:
    """Distinct worker pids in /readyz: one per worker process that answered."""
    loaded = set()
    for _ in range(rounds):
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
            loaded.add(http.get("/readyz").json()["worker"])
    return loaded


@pytest.mark.slow
def test_two_workers_and_a_restart_assign_the_same_arm(
    _world_template: World, tmp_path: Path
) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    shutil.copytree(_world_template.home, home)
    shutil.copytree(_world_template.data, data)
    tables, _ = load_snapshot(home / "features")
    _world_template.booster.save_model(str(tmp_path / "champion.txt"))
    tiny_booster(tables, _world_template.offers, seed=7).save_model(
        str(tmp_path / "challenger.txt")
    )
    env = {**os.environ, "OFFERS_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", REGISTER, str(home), *(str(tmp_path / f"{m}.txt")
                                                      for m in ("champion", "challenger"))],
        env=env, cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env |= {"OFFERS_API_TOKENS": TOKEN, "OFFERS_ADMIN_TOKEN": ADMIN, "OFFERS_RELOAD_WATCH_S": "0.2"}
    command = [str(BIN / "offers"), "serve", "--data", str(data), "--port", str(port),
               "--workers", "2", "--allow-past-now"]  # fmt: skip
    definition = {**DEFINITION, "shares": {"champion": 0.4, "challenger": 0.3, "holdout": 0.3}}
    users = [u for u, reason in USERS_BY_REASON.items() if reason == "OK"] + ["u_revoked"]
    with running(command, env, f"{base}/healthz", tmp_path / "serve1.log"):
        assert len(_workers(base)) == 2
        made = httpx.put(f"{base}/v1/experiments/e1", json=definition, headers=ADMIN_AUTH)
        assert made.status_code == 200
        time.sleep(1.5)  # the other worker's watcher reloads
        first = _arms(base, users, rounds=6)
    exp = find_experiment(home, "e1")
    for user, seen in first.items():
        expected = assign(exp, user) if user != "u_revoked" else None
        assert len(seen) == 1 and next(iter(seen))[0] == expected
    with running(command, env, f"{base}/healthz", tmp_path / "serve2.log"):
        again = _arms(base, users, rounds=2)
    assert again == first
