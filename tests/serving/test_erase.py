"""Erasure end to end: register first, rows gone everywhere, denied after reload, a receipt."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, World

from features.erasures import read_erasures
from features.snapshot import load_snapshot
from serving.app import create_app
from serving.audit import AuditLog
from serving.erase import erase
from serving.watcher import ReloadWatcher

TOKEN, ADMIN = "erase-api-token", "erase-admin-token"


def _rank(client: TestClient, user: str) -> dict:
    response = client.post(
        "/v1/rank",
        json={"user_id": user, "purpose": "offer_ranking", "now": NOW},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return {"status": response.status_code, **response.json()}


def _user_rows(world: World, user: str) -> dict[str, int]:
    tables, _ = load_snapshot(world.home / "features")
    return {
        name: int((frame["user_id"] == user).sum())
        for name, frame in tables.as_dict().items()
        if "user_id" in frame
    }


def test_erasure_end_to_end_through_a_running_app(world: World) -> None:
    # a cached training set under OFFERS_HOME (as training might write one), and one CSV
    cache = world.home / "cache" / "training"
    cache.mkdir(parents=True)
    pd.DataFrame({"user_id": ["u_ok", "u_cold", "u_ok"], "x": [1.0, 2.0, 3.0]}).to_parquet(
        cache / "train.parquet", index=False
    )
    pd.DataFrame({"user_id": ["u_ok", "u_minor"], "y": ["a", "b"]}).to_csv(
        cache / "labels.csv", index=False
    )
    pd.DataFrame({"offer_id": ["o00"]}).to_parquet(cache / "no_users.parquet", index=False)
    before = _user_rows(world, "u_ok")
    assert sum(before.values()) > 0

    client = TestClient(create_app(world.scorer, tokens=[TOKEN], admin_token=ADMIN))
    assert _rank(client, "u_ok")["status"] == 200

    receipt = erase(world.home, world.data, "u_ok")

    # the register first, the feature rows gone, the caches cleaned, other users untouched
    assert "u_ok" in read_erasures(world.home / "erasures")
    assert sum(_user_rows(world, "u_ok").values()) == 0
    assert sum(_user_rows(world, "u_expired").values()) > 0
    assert pd.read_parquet(cache / "train.parquet")["user_id"].tolist() == ["u_cold"]
    assert pd.read_csv(cache / "labels.csv")["user_id"].tolist() == ["u_minor"]
    # the source tables are the bank's system of record: untouched
    assert "u_ok" in set(pd.read_parquet(world.data / "users.parquet")["user_id"])

    # the receipt lists each store and the rows removed
    by_store = {s.store: s for s in receipt.stores}
    for table, n in before.items():
        snapshot = [s for name, s in by_store.items() if name.endswith(f": {table}")]
        assert [s.rows_removed for s in snapshot] == [n]
    cached = {s.location: s.rows_removed for s in receipt.stores if s.store == "cached table"}
    assert cached == {
        "cache/training/labels.csv": 1,
        "cache/training/no_users.parquet": 0,
        "cache/training/train.parquet": 2,
    }
    assert receipt.rows_removed == sum(before.values()) + 3
    assert {"erasure register", "MLflow", "online copy (running servers)", "source tables"} <= set(
        by_store
    )

    # the running app denies after reload, and its in-memory rows are gone
    assert client.app.state.scorer.state.source.has_history(
        "u_ok", client.app.state.scorer.state.cutoff_ns
    )
    response = client.post("/v1/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    denied = _rank(client, "u_ok")
    assert (denied["status"], denied["reason_code"]) == (403, "CONSENT_REVOKED")
    state = client.app.state.scorer.state
    assert not state.source.has_history("u_ok", state.cutoff_ns)
    assert _rank(client, "u_cold")["status"] == 200  # others still served

    # the tombstone: who, when, what; the audit log keeps the earlier decision records too
    records = AuditLog(world.home / "audit").records()
    tombstones = [r for r in records if r["event"] == "erasure"]
    assert len(tombstones) == 1
    assert tombstones[0]["user_id"] == "u_ok"
    assert tombstones[0]["request_id"] == receipt.tombstone_id
    assert sum(s["rows_removed"] for s in tombstones[0]["stores"]) == receipt.rows_removed


def test_a_second_erasure_removes_nothing_more(world: World) -> None:
    first = erase(world.home, world.data, "u_expired")
    second = erase(world.home, world.data, "u_expired")
    assert first.rows_removed > 0 and second.rows_removed == 0
    assert len(read_erasures(world.home / "erasures")) == 1


def test_cli_prints_a_receipt(world: World, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from offers.cli import erase_cmd

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    receipt = erase_cmd(user="u_revoked", data=world.data)
    out = capsys.readouterr().out
    assert "u_revoked" in out and "total" in out and "user_merchant" in out
    assert receipt["rows_removed"] > 0


def test_an_empty_user_id_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="empty"):
        erase(world.home, world.data, "")


def test_a_running_app_denies_within_seconds_without_a_reload(world: World) -> None:
    """The watcher (one per worker process) reloads on its own when the register changes."""
    app = create_app(world.scorer, tokens=[TOKEN], admin_token=ADMIN, watch_s=0.05)
    with TestClient(app) as client:  # runs the lifespan, which starts the watcher
        assert _rank(client, "u_ok")["status"] == 200
        erase(world.home, world.data, "u_ok")
        deadline = time.monotonic() + 10
        while _rank(client, "u_ok")["status"] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        denied = _rank(client, "u_ok")
        assert (denied["status"], denied["reason_code"]) == (403, "CONSENT_REVOKED")


def test_the_watcher_keeps_serving_when_a_reload_fails(world: World) -> None:
    scorer = world.scorer()
    watcher = ReloadWatcher(scorer, interval_s=60)
    assert watcher.check() is False  # nothing changed
    old = scorer.state
    scorer.model_alias = "gone"  # the next reload fails
    erase(world.home, world.data, "u_cold")
    assert watcher.check() is False and scorer.state is old
    scorer.model_alias = "champion"
    assert watcher.check() is True
    assert (
        scorer.rank("u_cold", "offer_ranking", now=pd.Timestamp(NOW)).reason_code
        == "CONSENT_REVOKED"
    )


def test_a_reload_requested_in_one_worker_reaches_the_others(world: World) -> None:
    """Two Scorers on one OFFERS_HOME stand for two `offers serve` worker processes."""
    first, second = world.scorer(), world.scorer()
    watcher = ReloadWatcher(second, interval_s=60)
    assert watcher.check() is False
    world.version = "2"
    first.request_reload()
    assert first.state.model_version == "2" and second.state.model_version == "1"
    assert watcher.check() is True and second.state.model_version == "2"
    assert ReloadWatcher(first, interval_s=60).check() is False  # it already has it
