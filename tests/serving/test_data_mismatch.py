"""A snapshot served with another folder's users or consents is refused (or, by flag, warned).

Before, `offers serve --data OTHER` silently ranked OTHER's users with the snapshot's features.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from frames import at
from serving_world import CUTOFF, NOW, World
from typer.testing import CliRunner

from features.io import file_digest
from features.job import build_snapshot
from features.snapshot import read_manifest
from serving.scorer import Scorer
from serving.sources import DATA_MISMATCH_ENV, DataMismatchError, check_sources


@pytest.fixture
def world(world: World) -> World:
    """The serving world with its snapshot built from its files (so with source digests)."""
    build_snapshot(world.data, world.home / "features", as_of=at(CUTOFF).to_pydatetime())
    assert read_manifest(world.home / "features")["source_digests"]
    return world


def _other_data(world: World, tmp_path: Path, table: str) -> Path:
    """A copy of the world's tables with `table` changed: another folder's (valid) data."""
    other = tmp_path / "other-data"
    shutil.copytree(world.data, other)
    frame = pd.read_parquet(other / f"{table}.parquet")
    if table == "users":  # one more customer
        frame = pd.concat([frame, frame.tail(1).assign(user_id="u_someone_else")])
    else:  # one row less
        frame = frame.iloc[1:]
    frame.to_parquet(other / f"{table}.parquet", index=False)
    return other


def test_the_same_data_loads(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_MISMATCH_ENV, raising=False)
    manifest = read_manifest(world.home / "features")
    assert check_sources(manifest, world.data) == []
    assert Scorer(world.home, world.data, model_loader=world.loader).state.snapshot_id


@pytest.mark.parametrize("table", ["users", "consents"])
def test_other_users_or_consents_are_refused(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    monkeypatch.delenv(DATA_MISMATCH_ENV, raising=False)
    other = _other_data(world, tmp_path, table)
    with pytest.raises(DataMismatchError, match=rf"\({table} differ\).*--allow-data-mismatch"):
        Scorer(world.home, other, model_loader=world.loader)
    monkeypatch.setenv(DATA_MISMATCH_ENV, "1")  # what --allow-data-mismatch sets: load, warn
    assert Scorer(world.home, other, model_loader=world.loader).state.snapshot_id


def test_offers_and_transactions_are_not_compared(world: World, tmp_path: Path) -> None:
    """Offers change between snapshots by design; transactions the scorer never reads."""
    other = _other_data(world, tmp_path, "offers")
    (other / "transactions.parquet").unlink()
    assert check_sources(read_manifest(world.home / "features"), other, False) == []


def test_only_users_and_consents_are_hashed(world: World) -> None:
    """Two small files: the transactions, which the scorer never reads, are not hashed again."""
    manifest = read_manifest(world.home / "features")
    assert set(manifest["source_digests"]) >= {"users", "consents"}
    assert manifest["source_digests"]["users"] == file_digest(world.data / "users.parquet")
    assert check_sources(manifest, world.data, False) == []


def test_a_running_scorer_takes_a_withdrawal_before_the_snapshot_is_rebuilt(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consents change between snapshots: a reload must not keep deciding on the old ones."""
    monkeypatch.delenv(DATA_MISMATCH_ENV, raising=False)
    scorer = world.scorer()
    now = at(NOW).to_pydatetime()
    assert scorer.rank("u_ok", "offer_ranking", now=now).decision.allowed
    consents = pd.read_parquet(world.data / "consents.parquet")
    consents.loc[consents["user_id"] == "u_ok", "revoked_at"] = at("2025-06-09")
    consents.to_parquet(world.data / "consents.parquet", index=False)
    with pytest.raises(DataMismatchError):  # a new server refuses the mismatch...
        Scorer(world.home, world.data, model_loader=world.loader)
    scorer.reload()  # ...a running one takes the new consents and warns
    denied = scorer.rank("u_ok", "offer_ranking", now=now)
    assert not denied.decision.allowed
    assert denied.decision.reason.value == "CONSENT_REVOKED"


def test_score_batch_cli_refuses_in_one_line_and_warns_by_flag(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offers.cli import app

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    monkeypatch.delenv(DATA_MISMATCH_ENV, raising=False)
    monkeypatch.setattr("serving.state.load_registered_model", world.loader)
    other = _other_data(world, tmp_path, "users")
    args = ["score-batch", "--data", str(other), "--out", str(tmp_path / "top.parquet")]
    args += ["--now", NOW, "--allow-past-now", "--jobs", "1"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip().count("\n") == 0  # one line
    assert (
        refused.stderr.startswith("error: snapshot ") and "offers features build" in refused.stderr
    )
    warned = CliRunner().invoke(app, [*args, "--allow-data-mismatch"])
    assert warned.exit_code == 0, warned.output
    assert "warning: the snapshot was built from other users files" in warned.stderr
    assert (tmp_path / "top.parquet").exists()
