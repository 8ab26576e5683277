"""The mapped Arrow copy workers share: same lookups and scores as the in-memory source."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_world import NOW, USERS_BY_REASON, World

from features.mapped import (
    FEATURE_COPY_ENV,
    MAPPED_DIR,
    MappedFeatureSource,
    ensure_mapped,
    mapped_key,
    write_mapped,
)
from features.snapshot import load_snapshot, read_manifest
from features.tables import FeatureTables
from features.vector import BLOCKS, FeatureSource
from serving.erase import erase


def _scores(world: World, mode: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    monkeypatch.setenv(FEATURE_COPY_ENV, mode)
    scorer = world.scorer()
    now = pd.Timestamp(NOW).to_pydatetime()
    out = []
    for user in [*USERS_BY_REASON, "u_unknown"]:
        r = scorer.rank(user, "offer_ranking", k=10, now=now)
        out.append((user, r.reason_code, r.cold_start, [(o.offer_id, o.score) for o in r.offers]))
    return out


def test_mapped_copy_scores_bit_for_bit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = _scores(world, "memory", monkeypatch)
    assert not (world.home / MAPPED_DIR).exists()
    mapped = _scores(world, "mapped", monkeypatch)
    assert mapped == memory  # floats compared exactly
    assert any(offers and not cold for _, _, cold, offers in memory)
    [folder] = (world.home / MAPPED_DIR).iterdir()
    assert folder.name == mapped_key(read_manifest(world.home / "features"))


def test_arrays_are_views_of_the_mapped_files(world: World) -> None:
    source = MappedFeatureSource(ensure_mapped(world.home, read_manifest(world.home / "features")))
    tables, _ = load_snapshot(world.home / "features")
    built = FeatureSource(tables)
    for name in BLOCKS:
        mine, theirs = getattr(source, name), getattr(built, name)
        assert not mine.values.flags.owndata and not mine.keys.flags.owndata
        np.testing.assert_array_equal(mine.keys, theirs.keys)
        np.testing.assert_array_equal(mine.values, theirs.values)
    again = pickle.loads(pickle.dumps(source))  # batch workers get the folder, map it again
    assert again.folder == source.folder and again.has_history("u_ok", _cutoff(tables))


def _cutoff(tables: FeatureTables) -> int:
    return int(pd.Timestamp(tables.user["cutoff"].iloc[0]).value)


def test_lookups_match_with_several_cutoffs_per_user(world: World, tmp_path: Path) -> None:
    """Several entries per user hash (as with colliding ids): every one is checked."""
    tables, _ = load_snapshot(world.home / "features")
    later = {n: f.assign(cutoff=f["cutoff"] + pd.Timedelta(days=7)) if "cutoff" in f else f
             for n, f in tables.as_dict().items()}  # fmt: skip
    both = FeatureTables(**{n: pd.concat([f, later[n]]) for n, f in tables.as_dict().items()})
    built = FeatureSource(both)
    write_mapped(built, tmp_path / "copy")
    mapped = MappedFeatureSource(tmp_path / "copy")
    users = [u for u, _ in built.pair_code_] + ["u_unknown", ""]
    first = _cutoff(tables)
    for cutoff in (first, first + 7 * 86_400 * 10**9, first + 1):
        cut = np.full(len(users), cutoff, np.int64)
        np.testing.assert_array_equal(mapped.pair_codes(users, cut), built.pair_codes(users, cut))
    assert mapped.sample_users(2) == built.sample_users(2)


def test_erasure_deletes_mapped_copies(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FEATURE_COPY_ENV, "mapped")
    scorer = world.scorer()
    state = scorer.state
    assert state.source.has_history("u_ok", state.cutoff_ns)
    [old] = (world.home / MAPPED_DIR).iterdir()

    receipt = erase(world.home, world.data, "u_ok")

    assert receipt.complete, receipt.problems
    assert not old.exists()
    assert [s.location for s in receipt.stores if s.store == "mapped feature copy"] == [str(old)]
    state = scorer.reload()
    assert not state.source.has_history("u_ok", state.cutoff_ns)
    [new] = (world.home / MAPPED_DIR).iterdir()
    assert new.name != old.name
