"""The audit log: one record per decision, the spec's fields, never an MCC, merchant or amount."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, World

from features import contract as c
from serving.app import create_app
from serving.audit import SYNC_INTERVAL, AuditLog

TOKEN = "audit-test-token"
SPEC_FIELDS = {
    "request_id", "ts", "user_id", "purpose", "decision", "reason_code", "consent_id",
    "consent_state", "consent_expires_at", "policy_version", "feature_snapshot_id", "model",
    "offer_ids", "n_excluded_sensitive",
}  # fmt: skip
REQUESTS = [
    ("u_ok", "offer_ranking"),
    ("u_cold", "offer_ranking"),
    ("u_minor", "offer_ranking"),
    ("u_ok", "targeted_advertising"),
    ("ghost", "offer_ranking"),
    ("u_revoked", "offer_ranking"),
]


def _forbidden_values(world: World) -> set[str]:
    offers = world.offers
    return set(offers[c.MCC]) | set(offers[c.MERCHANT_ID]) | set(offers[c.TITLE])


def test_one_record_per_request_with_spec_fields_and_nothing_forbidden(world: World) -> None:
    client = TestClient(create_app(world.scorer, tokens=[TOKEN]))
    audit = AuditLog(world.home / "audit")
    request_ids = []
    for user, purpose in REQUESTS:
        before = len(audit.records())
        response = client.post(
            "/v1/rank",
            json={"user_id": user, "purpose": purpose, "now": NOW},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code in (200, 403)
        records = audit.records()
        assert len(records) == before + 1
        record = records[-1]
        body = response.json()
        request_ids.append(body["request_id"])
        assert record["request_id"] == body["request_id"]
        assert (record["user_id"], record["purpose"]) == (user, purpose)
        assert (record["decision"], record["reason_code"]) == (
            body["decision"],
            body["reason_code"],
        )
        assert set(record) >= SPEC_FIELDS
        assert record["offer_ids"] == [o["offer_id"] for o in body.get("offers", [])]
        text = json.dumps(record)
        keys = _all_keys(record)
        assert not keys & {"mcc", "merchant_id", "merchant", "amount", "title", "reward"}
        for value in _forbidden_values(world):
            assert f'"{value}"' not in text, value
    assert len(set(request_ids)) == len(REQUESTS)
    allowed = [r for r in audit.records() if r["decision"] == "allow"]
    assert allowed[0]["n_excluded_sensitive"] == 4 and allowed[0]["consent_id"]
    assert allowed[0]["consent_expires_at"].startswith("2026-01-01")


def _all_keys(record: dict) -> set[str]:
    keys = set(record)
    for value in record.values():
        if isinstance(value, dict):
            keys |= _all_keys(value)
    return keys


def test_forbidden_fields_are_refused(tmp_path) -> None:
    audit = AuditLog(tmp_path)
    for key in ("mcc", "amount", "merchant_id", "MCC"):
        with pytest.raises(ValueError, match="may not be written"):
            audit.append({"event": "decision", key: "x"})
    with pytest.raises(ValueError, match="may not be written"):
        audit.append({"event": "decision", "nested": {"amount": 3}})
    assert audit.records() == []


def test_daily_files_and_tail(tmp_path) -> None:
    audit = AuditLog(tmp_path)
    for i in range(5):
        audit.append({"event": "decision", "i": i})
    (tmp_path / "2020-01-01.jsonl").write_text(json.dumps({"event": "old", "i": -1}) + "\n")
    assert [r["i"] for r in audit.tail(3)] == [2, 3, 4]
    assert [r["i"] for r in audit.tail(100)] == [-1, 0, 1, 2, 3, 4]
    assert audit.tail(0) == []
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    assert [p.name for p in audit.files()] == ["2020-01-01.jsonl", f"{today}.jsonl"]


def test_concurrent_writers_never_interleave(tmp_path) -> None:
    logs = [AuditLog(tmp_path, sync=SYNC_INTERVAL) for _ in range(2)]  # two "processes"
    payload = "x" * 3000

    def write(log: AuditLog, t: int) -> None:
        for i in range(100):
            log.append({"event": "decision", "t": t, "i": i, "pad": payload})

    threads = [threading.Thread(target=write, args=(logs[t % 2], t)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    records = AuditLog(tmp_path).records()  # raises on any torn line
    assert len(records) == 600
    assert {(r["t"], r["i"]) for r in records} == {(t, i) for t in range(6) for i in range(100)}


def test_cli_tail_prints_json_lines(world: World, monkeypatch, capsys) -> None:
    from offers.cli import audit_tail

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    world.scorer().rank("u_ok", "offer_ranking", now=pd.Timestamp(NOW))
    records = audit_tail(n=1)
    assert len(records) == 1 and records[0]["user_id"] == "u_ok"
    assert json.loads(capsys.readouterr().out.strip())["request_id"] == records[0]["request_id"]
