"""benchmarks/real_data_stacked.py: the stacked score is the linear log-odds plus the forest's
raw score (hand-computed), time blocks never split an instant, out-of-fold scores never see
their own labels."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from features.vector import FEATURE_COLUMNS
from training.config import TrainConfig
from training.splits import Split

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400 * 10**9


@functools.cache
def _stacked():
    path = ROOT / "benchmarks/real_data_stacked.py"
    spec = importlib.util.spec_from_file_location("real_data_stacked", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _split(X: np.ndarray, y: np.ndarray, group: np.ndarray, shown_day: np.ndarray) -> Split:
    n = len(y)
    return Split(
        name="t",
        X=X,
        y=np.asarray(y, dtype=float),
        group=np.asarray(group, dtype=np.int64),
        user_id=np.array([f"u{i}" for i in range(n)], dtype=object),
        offer_id=np.array([f"o{i}" for i in range(n)], dtype=object),
        merchant_id=np.array(["m"] * n, dtype=object),
        shown_at=np.asarray(shown_day, dtype=np.int64) * DAY,
        position=np.full(n, np.nan),
        new_user=np.zeros(n, dtype=bool),
    )


def test_log_odds_is_exact_and_finite_at_the_edges() -> None:
    s = _stacked()
    np.testing.assert_allclose(s.log_odds(np.array([0.5, 0.75, 0.1])), [0, np.log(3), -np.log(9)])
    assert np.isfinite(s.log_odds(np.array([0.0, 1.0]))).all()


def test_init_score_forest_adds_its_hand_computed_leaf_to_the_linear_log_odds() -> None:
    """One binary round from init log-odds [0]*4 + [ln 3]*4, labels [0,0,1,1] + [1]*4, one
    feature separating the halves: leaf = -lr * sum(p - y) / sum(p (1 - p)); left 0, right
    0.3 * 1 / 0.75 = 0.4 (no boost from the average: the init is the starting score)."""
    s = _stacked()
    X = np.zeros((8, len(FEATURE_COLUMNS) + 1))
    X[4:, 0] = 1.0
    X[4:, -1] = np.log(3.0)  # the linear column: p = 0.75 on the right half
    train = _split(X, np.array([0, 0, 1, 1, 1, 1, 1, 1]), np.array([8]), np.zeros(8))
    config = TrainConfig(
        learning_rate=0.3,
        n_estimators=1,
        min_child_samples=2,
        lambda_l2=0.0,
        bagging_freq=0,
        feature_fraction=1.0,
        num_threads=1,
    )
    booster = s.fit_forest(train, s.INIT, "binary", 2, config)
    expected = np.array([0.0] * 4 + [np.log(3.0) + 0.4] * 4)
    np.testing.assert_allclose(s.stacked_score(booster, train, s.INIT, 1), expected, atol=1e-6)
    forest_only = booster.predict(np.ascontiguousarray(X[:, :-1]), raw_score=True)
    np.testing.assert_allclose(forest_only, [0.0] * 4 + [0.4] * 4, atol=1e-6)


def test_the_feature_approach_scores_with_the_forest_alone() -> None:
    s = _stacked()
    rng = np.random.default_rng(0)
    X = rng.random((40, len(FEATURE_COLUMNS) + 1))
    train = _split(X, (X[:, -1] > 0.5).astype(float), np.full(4, 10), np.zeros(40))
    config = TrainConfig(n_estimators=3, min_child_samples=5, num_threads=1)
    booster = s.fit_forest(train, s.FEATURE, "lambdarank", 3, config)
    assert booster.num_feature() == len(FEATURE_COLUMNS) + 1
    score = s.stacked_score(booster, train, s.FEATURE, 3)
    np.testing.assert_array_equal(score, booster.predict(X, raw_score=True))


def test_time_blocks_are_contiguous_and_never_split_an_instant() -> None:
    s = _stacked()
    blocks = s.time_blocks(np.array([1, 1, 1, 2, 3, 3, 4, 5]), 2)
    np.testing.assert_array_equal(blocks, [0, 0, 0, 0, 1, 1, 1, 1])
    assert s.time_blocks(np.array([7, 7, 7]), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="at least 2 blocks"):
        s.time_blocks(np.array([1, 2]), 1)
    one_instant = _split(
        np.zeros((4, len(FEATURE_COLUMNS))), np.array([0, 1, 0, 1]), [2, 2], [3] * 4
    )
    with pytest.raises(ValueError, match="2 instants or more in 't'"):
        s.out_of_fold(one_instant, TrainConfig(), 2)


def test_out_of_fold_scores_never_see_their_own_block_labels() -> None:
    """Metamorphic: relabelling block 0 leaves block 0's scores as they were and moves the
    others' (they learned from it)."""
    s = _stacked()
    rng = np.random.default_rng(1)
    n_slates, size = 30, 10
    X = rng.normal(size=(n_slates * size, len(FEATURE_COLUMNS)))
    y = (X[:, 0] + rng.normal(size=len(X)) > 1.0).astype(float)
    days = np.repeat(np.arange(n_slates) // 2, size)  # two slates an instant
    group = np.full(n_slates, size)
    config = TrainConfig()
    before = s.out_of_fold(_split(X, y, group, days), config, 3)
    block0 = np.repeat(s.time_blocks(np.arange(n_slates) // 2, 3) == 0, size)
    flipped = np.where(block0, 1.0 - y, y)
    after = s.out_of_fold(_split(X, flipped, group, days), config, 3)
    assert np.isfinite(before).all()
    np.testing.assert_array_equal(after[block0], before[block0])
    assert np.abs(after[~block0] - before[~block0]).max() > 1e-3


def test_diff_table_is_the_paired_mean_difference_over_slates_with_a_redemption() -> None:
    s = _stacked()
    a = s.Setting(s.INIT, "binary", 3, 0.05, 10)
    b = s.Setting(s.FEATURE, "lambdarank", 7, 0.02, 25)
    linear = np.array([0.5, 0.2, np.nan, 1.0])  # slate 3 has no redemption: left out
    test = {a: np.array([0.5, 0.4, np.nan, 1.0]), b: np.array([0.2, 0.2, np.nan, 0.4])}
    table = s.diff_table(test, linear, {a: 0.3}, n_boot=200, seed=0)
    assert table["setting"].tolist() == [
        "init binary 3L lr0.05 10r",
        "feature lambdarank 7L lr0.02 25r",
    ]
    np.testing.assert_allclose(table["ndcg_at_10"], [1.9 / 3, 0.8 / 3])
    np.testing.assert_allclose(table["diff"], [0.2 / 3, -0.9 / 3])
    assert (table["ci_low"] <= table["diff"]).all() and (table["diff"] <= table["ci_high"]).all()
    assert table["fold_ndcg_at_10"].iloc[0] == 0.3 and np.isnan(table["fold_ndcg_at_10"].iloc[1])
