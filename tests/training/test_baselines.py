"""Baselines: hand-checked popularity smoothing and affinity order; all score any split."""

from __future__ import annotations

import numpy as np
import pytest

from features.vector import FEATURE_COLUMNS
from training.baselines import (
    AFFINITY,
    LOGISTIC,
    ORACLE,
    POPULARITY,
    RANDOM,
    UC_DECAYED,
    UM_DECAYED,
    affinity_scores,
    fit_baselines,
    popularity_scores,
)
from training.config import TrainConfig
from training.splits import TEST, TRAIN, Split


def _split(merchants: list[str], y: list[float], X: np.ndarray | None = None) -> Split:
    n = len(merchants)
    return Split(
        name="t",
        X=np.zeros((n, len(FEATURE_COLUMNS))) if X is None else X,
        y=np.asarray(y, dtype=float),
        group=np.array([n]),
        user_id=np.array(["u"] * n, dtype=object),
        offer_id=np.array([f"o{i}" for i in range(n)], dtype=object),
        merchant_id=np.asarray(merchants, dtype=object),
        shown_at=np.zeros(n, dtype=np.int64),
        position=np.arange(1.0, n + 1),
        new_user=np.zeros(n, dtype=bool),
    )


def test_popularity_is_the_smoothed_merchant_rate() -> None:
    train = _split(["a", "a", "a", "a", "b", "b"], [1, 1, 0, 0, 0, 0])
    rate = 2 / 6
    score = popularity_scores(train, prior=3.0)(_split(["a", "b", "c"], [0, 0, 0]))
    np.testing.assert_allclose(
        score,
        [(2 + 3 * rate) / (4 + 3), (0 + 3 * rate) / (2 + 3), rate],  # unseen: global rate
    )


def test_affinity_is_merchant_first_then_category() -> None:
    X = np.zeros((4, len(FEATURE_COLUMNS)))
    um, uc = FEATURE_COLUMNS.index(UM_DECAYED), FEATURE_COLUMNS.index(UC_DECAYED)
    X[:, um] = [0.0, 5.0, 5.0, 0.0]
    X[:, uc] = [900.0, 1.0, 2.0, 0.0]
    order = np.argsort(-affinity_scores(_split(["a"] * 4, [0] * 4, X)))
    assert order.tolist() == [2, 1, 0, 3]


def test_every_baseline_scores_the_test_slates(synth_data) -> None:
    train, test = synth_data.splits[TRAIN], synth_data.splits[TEST]
    scorers = fit_baselines(train, TrainConfig(logistic_max_rows=5000), with_oracle=True)
    assert set(scorers) == {RANDOM, POPULARITY, AFFINITY, LOGISTIC, ORACLE}
    for name, score in scorers.items():
        values = score(test)
        assert values.shape == (test.n_rows,) and np.isfinite(values).all(), name
    np.testing.assert_array_equal(scorers[ORACLE](test), test.oracle)
    assert ((scorers[LOGISTIC](test) > 0) & (scorers[LOGISTIC](test) < 1)).all()


def test_no_oracle_without_oracle_scores() -> None:
    with pytest.raises(ValueError, match="no oracle"):
        fit_baselines(_split(["a", "b"], [1, 0]), TrainConfig(), with_oracle=True)[ORACLE](
            _split(["a"], [0])
        )
