"""Batch scoring: the same decisions and rankings as requests, one audit record per user."""

from __future__ import annotations

import pandas as pd
import pytest
from serving_world import NOW, USERS_BY_REASON, World

from serving.audit import AuditLog
from serving.batch import OUTPUT_COLUMNS, score_batch

NOW_TS = pd.Timestamp(NOW)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_batch_equals_requests_and_audits_each_user(world: World, tmp_path, n_jobs: int) -> None:
    out = tmp_path / "out" / "top.parquet"
    report = score_batch(
        world.home, world.data, out, k=3, n_jobs=n_jobs, now=NOW_TS, model_loader=world.loader,
        chunk_users=2, allow_past_now=True,
    )  # fmt: skip
    frame = pd.read_parquet(out)
    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    users = sorted(USERS_BY_REASON)
    assert report.users == len(users) and report.n_jobs == n_jobs
    assert report.allowed == 2 and report.cold_start == 1
    assert report.denied_by_reason == {r: 1 for u, r in USERS_BY_REASON.items() if r != "OK"}
    assert report.users_per_s > 0

    records = AuditLog(world.home / "audit").records()
    assert sorted(r["user_id"] for r in records) == users
    assert {r["channel"] for r in records} == {"batch"}
    assert set(frame["request_id"]) == {r["request_id"] for r in records}

    scorer = world.scorer()
    for user in users:
        mine = frame[frame["user_id"] == user].sort_values("rank")
        one = scorer.rank(user, "offer_ranking", k=3, now=NOW_TS)
        assert set(mine["reason_code"]) == {one.reason_code}
        if one.allowed:
            assert mine["offer_id"].tolist() == [o.offer_id for o in one.offers]
            assert mine["score"].tolist() == pytest.approx([o.score for o in one.offers])
            assert set(mine["cold_start"]) == {one.cold_start}
        else:
            assert len(mine) == 1 and mine["offer_id"].isna().all() and mine["rank"].isna().all()


def test_cli_prints_users_per_second(world: World, tmp_path, monkeypatch, capsys) -> None:
    from offers.cli import score_batch_cmd

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    monkeypatch.setattr("serving.state.load_registered_model", world.loader)
    out = tmp_path / "top.parquet"
    report = score_batch_cmd(
        out=out, data=world.data, k=2, jobs=1, now=NOW, alias="champion", allow_past_now=True
    )
    assert "users/s" in capsys.readouterr().out
    assert report.users == len(USERS_BY_REASON) and out.exists()


@pytest.mark.parametrize(("k", "message"), [(0, "k must be"), (3, "in the past")])
def test_the_batch_front_end_checks_the_request_before_any_user(
    world: World, tmp_path, k: int, message: str
) -> None:
    """One check for the whole batch, on the parent (the Spark path's too), even with no users."""
    from serving.requests import RequestError

    out = tmp_path / "top.parquet"
    with pytest.raises(RequestError, match=message):  # NOW is past, and replay mode is off
        score_batch(
            world.home, world.data, out, k, now=NOW_TS, user_ids=[], model_loader=world.loader
        )
    assert not out.exists() and AuditLog(world.home / "audit").records() == []
