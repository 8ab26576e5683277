"""`offers serve --online redis://...` against a real redis-server, beside an embedded server.

Both real servers (uvicorn, 127.0.0.1) serve the same registered champion from one OFFERS_HOME;
the same requests must get the same decisions, offers, scores and audit records. Then `offers
erase` (the CLI) reaches Redis, and the Redis-backed server denies the erased user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis_server import RedisServer, redis_server
from registered import register_champion
from servers import free_port, running
from serving_world import NOW, USERS_BY_REASON, World

from features.online.publish import publish_online
from serving.audit import AuditLog

pytestmark = pytest.mark.slow

TOKEN = "online-real-token"
BIN = Path(sys.executable).parent
VOLATILE = {"ts", "request_id"}


@pytest.fixture(scope="module")
def servers(
    _world_template: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path, RedisServer, dict[str, str]]]:
    root = tmp_path_factory.mktemp("online-real")
    home, data = root / "home", root / "data"
    shutil.copytree(_world_template.home, home)
    shutil.copytree(_world_template.data, data)
    env = {**os.environ, "OFFERS_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}  # fmt: skip
    register_champion(_world_template.booster, home, root, env)
    env |= {"OFFERS_API_TOKENS": TOKEN, "OFFERS_RELOAD_WATCH_S": "0.5"}
    env.pop("OFFERS_ONLINE_STORE", None)
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(root / "redis"))
        publish_online(redis.url, home, "offers")
        ports = {}
        for name, extra in (("embedded", []), ("online", ["--online", redis.url])):
            ports[name] = free_port()
            command = [str(BIN / "offers"), "serve", "--data", str(data), "--port",
                       str(ports[name]), "--allow-past-now", *extra]  # fmt: skip
            health = f"http://127.0.0.1:{ports[name]}/healthz"
            stack.enter_context(running(command, env, health, root / f"{name}.log"))
        env |= {f"PORT_{k.upper()}": str(v) for k, v in ports.items()}
        yield home, data, redis, env


def _rank(port: str, user: str) -> dict:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/rank",
        json={"user_id": user, "purpose": "offer_ranking", "now": NOW},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    return {"status": response.status_code, **response.json()}


def test_redis_backed_server_answers_as_the_embedded_one(servers) -> None:
    home, _, _, env = servers
    users = [*USERS_BY_REASON, "u_unknown"]
    answers = {}
    for name in ("embedded", "online"):
        answers[name] = [_rank(env[f"PORT_{name.upper()}"], u) for u in users]
    records = [
        {k: v for k, v in r.items() if k not in VOLATILE}
        for r in AuditLog(home / "audit").records()
        if r.get("event") == "decision"
    ]
    for want, got in zip(answers["embedded"], answers["online"], strict=True):
        want_scores = np.array([o.pop("score") for o in want.get("offers", [])])
        got_scores = np.array([o.pop("score") for o in got.get("offers", [])])
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-9)
        want.pop("request_id"), got.pop("request_id")
        assert got == want
    assert any(a["status"] == 200 and a["offers"] for a in answers["embedded"])
    assert len(records) == 2 * len(users)
    assert records[len(users) :] == records[: len(users)]


def test_erase_reaches_redis_and_the_online_server_denies(servers) -> None:
    home, data, redis, env = servers
    port = env["PORT_ONLINE"]
    assert _rank(port, "u_ok")["status"] == 200
    done = subprocess.run(
        [str(BIN / "offers"), "erase", "--user", "u_ok", "--data", str(data)],
        env={**env, "COLUMNS": "300"}, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"online store {redis.url}" in done.stdout
    [tombstone] = [r for r in AuditLog(home / "audit").records() if r.get("event") == "erasure"]
    assert {"store": f"online store {redis.url}", "rows_removed": 1} in tombstone["stores"]
    assert redis.client().keys("*:u:u_ok") == []
    deadline = time.monotonic() + 30
    while (answer := _rank(port, "u_ok"))["status"] != 403 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (answer["status"], answer["reason_code"]) == (403, "CONSENT_REVOKED")
