"""The online store on a real redis-server: same answers as embedded, erasure, switch, refusals."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from frames import at
from redis_server import RedisServer, redis_server
from serving_world import NOW, USERS_BY_REASON, World
from typer.testing import CliRunner

from features import contract as c
from features.backend import connect
from features.erasures import record_erasure
from features.online.layout import Keys, columns_version
from features.online.publish import publish_online
from features.online.stores import register_store, registered_stores
from features.snapshot import load_snapshot, publish_snapshot
from features.sources import register_sources
from offers.cli import app, check_data
from offers.cli.common import is_expected
from serving.app import create_app
from serving.audit import AuditLog
from serving.erase import erase
from serving.online import OnlineFeatures, OnlineMismatchError
from serving.scorer import ModelMismatchError
from serving.sources import DataMismatchError

PREFIX = "offers"
TOKEN = "online-token"
VOLATILE = {"ts", "request_id"}  # differ between any two runs of the same request


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def store(redis: RedisServer) -> RedisServer:
    redis.client().flushall()
    return redis


def _results(scorer, users: list[str]) -> list[dict]:
    out = []
    for user in users:
        r = scorer.rank(user, "offer_ranking", k=10, now=pd.Timestamp(NOW).to_pydatetime())
        out.append(
            {
                "user": user,
                "decision": r.decision.decision,
                "reason": r.reason_code,
                "snapshot": r.snapshot_id,
                "cold": r.cold_start,
                "offers": [(o.offer_id, o.rank, o.reasons) for o in r.offers],
                "scores": np.array([o.score for o in r.offers]),
            }
        )
    return out


def _audit(folder: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in AuditLog(folder).records()]


def test_online_scorer_answers_as_the_embedded_one(world: World, store: RedisServer) -> None:
    report = publish_online(store.url, world.home, PREFIX)
    tables, _ = load_snapshot(world.home / "features")
    assert report["users_written"] == len(tables.user) == 3  # users with history at the cutoff
    embedded = world.scorer(audit=AuditLog(world.home / "audit-embedded"))
    online = world.scorer(audit=AuditLog(world.home / "audit-online"), online=store.url)
    assert online.state.online is not None and embedded.state.online is None
    users = [*USERS_BY_REASON, "u_unknown"]
    want, got = _results(embedded, users), _results(online, users)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g.pop("scores"), w.pop("scores"), rtol=0, atol=1e-9)
        assert g == w
    assert any(w["offers"] and not w["cold"] for w in want)  # a ranked user, not only denials
    assert _audit(world.home / "audit-online") == _audit(world.home / "audit-embedded")


def test_online_app_over_http_matches_embedded(world: World, store: RedisServer) -> None:
    publish_online(store.url, world.home, PREFIX)
    body = {"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answers = []
    for online in (None, store.url):
        app = create_app(lambda o=online: world.scorer(online=o), tokens=[TOKEN], watch_s=0)
        with TestClient(app) as client:
            answer = client.post("/v1/rank", json=body, headers=headers).json()
        answers.append({k: v for k, v in answer.items() if k != "request_id"})
    assert answers[0]["offers"] and answers[0] == answers[1]


def test_erased_user_is_gone_from_redis_and_denied(world: World, store: RedisServer) -> None:
    publish_online(store.url, world.home, PREFIX)
    online = world.scorer(online=store.url)
    assert online.rank("u_ok", "offer_ranking", now=pd.Timestamp(NOW).to_pydatetime()).offers
    client = store.client()
    assert client.keys("*:u:u_ok") != []

    receipt = erase(world.home, world.data, "u_ok")

    assert receipt.complete, receipt.problems
    assert client.keys("*:u:u_ok") == []
    assert client.keys("*:u:u_revoked") != []  # other users stay
    [entry] = [s for s in receipt.stores if s.store.startswith("online store")]
    assert entry.store == f"online store {store.url}" and entry.rows_removed == 1
    online.reload()
    result = online.rank("u_ok", "offer_ranking", now=pd.Timestamp(NOW).to_pydatetime())
    assert (result.decision.decision, result.reason_code) == ("deny", "CONSENT_REVOKED")
    assert result.offers == []


def test_unreachable_store_makes_the_receipt_incomplete(world: World, tmp_path: Path) -> None:
    with redis_server(tmp_path / "short-lived") as gone:
        publish_online(gone.url, world.home, PREFIX)
    receipt = erase(world.home, world.data, "u_ok")
    assert not receipt.complete
    assert any(gone.url in p and "unreachable" in p for p in receipt.problems)
    assert not any(s.store.startswith("online store") for s in receipt.stores)


def test_register_keeps_no_password(world: World) -> None:
    register_store(world.home, "redis://:s3cret@10.0.0.5:6380/2", "bank")
    assert registered_stores(world.home)[0].url == "redis://10.0.0.5:6380/2"
    assert "s3cret" not in (world.home / "online" / "stores.json").read_text()


def test_publish_skips_erased_users(world: World, store: RedisServer) -> None:
    tables, _ = load_snapshot(world.home / "features")
    record_erasure(world.home / "erasures", "u_ok")  # recorded; the snapshot still has the rows
    report = publish_online(store.url, world.home, PREFIX)
    assert store.client().keys("*:u:u_ok") == []
    assert report["users_written"] == len(tables.user) - 1


def _publish_second_snapshot(world: World, cutoff: str) -> None:
    frames = {t: pd.read_parquet(world.data / f"{t}.parquet") for t in c.TABLES}
    sources = register_sources(
        connect(threads=1), frames[c.TRANSACTIONS], frames[c.USERS], frames[c.CONSENTS], {},
        at("2025-06-08T06:00"),
    )  # fmt: skip
    publish_snapshot(sources, world.home / "features", at(cutoff).to_pydatetime())


def _signature(result) -> tuple:
    return (result.snapshot_id, tuple((o.offer_id, o.score) for o in result.offers))


def test_switch_mid_traffic_serves_no_mixed_features(world: World, store: RedisServer) -> None:
    now = pd.Timestamp(NOW).to_pydatetime()
    users = ["u_ok", "u_cold", "u_revoked"]
    first = publish_online(store.url, world.home, PREFIX)["snapshot_id"]
    online = world.scorer(online=store.url)
    expected = {_signature(online.rank(u, "offer_ranking", now=now)) for u in users}
    _publish_second_snapshot(world, "2025-06-08")
    second_scorer = world.scorer()  # embedded, on the new snapshot
    expected |= {_signature(second_scorer.rank(u, "offer_ranking", now=now)) for u in users}
    assert len({s for s, _ in expected}) == 2 and len(expected) > 3  # the snapshots differ

    seen, errors, stop = [], [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for u in users:
                try:
                    seen.append(_signature(online.rank(u, "offer_ranking", now=now)))
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    errors.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        report = publish_online(store.url, world.home, PREFIX, grace_s=0)
        for _ in range(30):  # keep traffic on the new namespace for a moment
            if online.state.snapshot_id == report["snapshot_id"]:
                break
            threading.Event().wait(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert set(seen) <= expected, set(seen) - expected
    assert {s for s, _ in seen} == {first, report["snapshot_id"]}
    assert report["old_namespaces_removed"]  # the first namespace was dropped mid-traffic


def test_a_store_of_other_columns_or_policy_is_refused(world: World, store: RedisServer) -> None:
    with pytest.raises(OnlineMismatchError, match="no published snapshot"):
        world.scorer(online=store.url)
    report = publish_online(store.url, world.home, PREFIX)
    client, ns = store.client(), report["namespace"]
    meta = json.loads(client.get(Keys.meta(ns)))

    client.set(Keys.meta(ns), json.dumps({**meta, "columns_version": "0123456789ab"}))
    with pytest.raises(
        OnlineMismatchError, match=f"columns version 0123456789ab.*{columns_version()}"
    ):
        world.scorer(online=store.url)
    client.set(Keys.meta(ns), json.dumps({**meta, "policy_version": "other-policy"}))
    with pytest.raises(ModelMismatchError, match="other-policy"):
        world.scorer(online=store.url)
    digests = {**meta["source_digests"], c.USERS: "0" * 64}
    client.set(Keys.meta(ns), json.dumps({**meta, "source_digests": digests}))
    with pytest.raises(DataMismatchError, match="users differ"):
        world.scorer(online=store.url)
    client.set(Keys.meta(ns), json.dumps(meta))
    assert OnlineFeatures.open(store.url, PREFIX).ns == ns


def test_cli_publish_to_an_unreachable_store_is_one_line(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    monkeypatch.setenv("COLUMNS", "80")
    with redis_server(tmp_path / "gone") as gone:
        url = gone.url
    result = CliRunner().invoke(app, ["features", "publish-online", "--to", url])
    assert result.exit_code == 2, result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert "127.0.0.1" in line and "Connection refused" in line


def test_serve_refuses_a_mismatched_store_before_workers_start(
    world: World, store: RedisServer
) -> None:
    ns = publish_online(store.url, world.home, PREFIX)["namespace"]
    client = store.client()
    meta = json.loads(client.get(Keys.meta(ns)))
    client.set(Keys.meta(ns), json.dumps({**meta, "columns_version": "0123456789ab"}))
    with pytest.raises(OnlineMismatchError) as refused:
        check_data(world.home, world.data, False, store.url)
    assert is_expected(refused.value)  # `offers serve` prints it as one `error:` line, exit 2


def test_a_store_gone_mid_service_is_503_and_no_record(world: World, tmp_path: Path) -> None:
    with redis_server(tmp_path / "short-lived") as short:
        publish_online(short.url, world.home, PREFIX)
        audit = AuditLog(world.home / "audit-503")
        app = create_app(lambda: world.scorer(online=short.url, audit=audit), tokens=[TOKEN],
                         watch_s=0)  # fmt: skip
        client = TestClient(app)
        body = {"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/v1/rank", json=body, headers=headers).status_code == 200
    answer = client.post("/v1/rank", json=body, headers=headers)
    assert answer.status_code == 503 and "online feature store" in answer.json()["detail"]
    assert len(audit.records()) == 1  # the answered request only
    denied = client.post("/v1/rank", json={**body, "user_id": "u_minor"}, headers=headers)
    assert denied.status_code == 403  # a denial reads no features: still answered
