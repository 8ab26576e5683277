"""Ranking metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from training.metrics import evaluate, metric_names, per_slate, roc_auc


def _dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_hand_computed_single_slate() -> None:
    # Ranked order by score: d (0), b (1), a (1), c (0), e (0)
    y = np.array([1, 1, 0, 0, 0], dtype=float)  # a b c d e
    s = np.array([0.7, 0.8, 0.1, 0.9, 0.05])
    m = evaluate(y, s, np.array([5]), ks=(5, 10))
    dcg = _dcg([0, 1, 1, 0, 0])
    idcg = _dcg([1, 1])
    assert m["ndcg_at_5"] == pytest.approx(dcg / idcg)
    assert m["ndcg_at_10"] == pytest.approx(dcg / idcg)
    # AP: hits at ranks 2 and 3 -> (1/2 + 2/3) / 2
    assert m["map_at_10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["recall_at_5"] == 1.0
    assert m["n_slates"] == 1.0


def test_recall_and_ndcg_truncate_at_k() -> None:
    # 12 items, the only positive ranked 7th: outside the top 5, inside the top 10
    y = np.zeros(12)
    y[0] = 1
    s = -np.arange(12, dtype=float)
    s[0] = s[6] - 0.5  # rank 7 (index 6 in ranked order)
    m = evaluate(y, s, np.array([12]))
    assert m["recall_at_5"] == 0.0 and m["recall_at_10"] == 1.0
    assert m["ndcg_at_5"] == 0.0
    assert m["ndcg_at_10"] == pytest.approx(1 / math.log2(7 + 1))
    assert m["map_at_10"] == pytest.approx(1 / 7)


def test_map_divides_by_min_of_k_and_positives() -> None:
    y = np.array([1.0] * 12)
    s = np.arange(12, dtype=float)
    assert evaluate(y, s, np.array([12]))["map_at_10"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [5, 10])
def test_ndcg_matches_sklearn_on_random_slates(k: int) -> None:
    rng = np.random.default_rng(7)
    sizes = rng.integers(3, 20, 200)
    y = (rng.random(sizes.sum()) < 0.2).astype(float)
    s = rng.random(sizes.sum())  # continuous: no ties
    per = per_slate(y, s, sizes, ks=(k,))[f"ndcg_at_{k}"]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    expected, ours = [], []
    for i, (a, n) in enumerate(zip(starts, sizes, strict=True)):
        if y[a : a + n].sum() == 0:
            assert math.isnan(per[i])
            continue
        expected.append(ndcg_score([y[a : a + n]], [s[a : a + n]], k=k))
        ours.append(per[i])
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    m = evaluate(y, s, sizes)
    assert m[f"ndcg_at_{k}"] == pytest.approx(np.mean(expected))


def test_graded_labels_match_sklearn() -> None:
    y = np.array([3.0, 0.0, 2.0, 1.0, 0.0, 2.0])
    s = np.array([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
    ours = per_slate(y, s, np.array([6]), ks=(5,))["ndcg_at_5"][0]
    assert ours == pytest.approx(ndcg_score([y], [s], k=5))


def test_ties_are_not_broken_by_row_order() -> None:
    """A constant scorer must not inherit the logged order (which carries position bias)."""
    n_slates, size = 2000, 10
    y = np.zeros(n_slates * size)
    y[::size] = 1.0  # the first logged row always redeems
    constant = evaluate(y, np.zeros_like(y), np.full(n_slates, size))
    perfect = evaluate(y, y, np.full(n_slates, size))
    assert perfect["ndcg_at_10"] == 1.0
    # random ranking of 1 positive in 10: E[recall@5] = 0.5
    assert constant["recall_at_5"] == pytest.approx(0.5, abs=0.04)
    assert constant["ndcg_at_10"] < 0.5


def test_slates_without_positive_are_left_out_and_segments_split() -> None:
    y = np.array([0, 1, 0, 0, 0, 0, 1, 0], dtype=float)
    s = np.array([0.2, 0.9, 0.5, 0.1, 0.3, 0.9, 0.8, 0.1])
    group = np.array([2, 3, 3])  # slate 2 (rows 2-4) has no positive
    segments = {"new": np.array([True, False, False])}
    m = evaluate(y, s, group, segments=segments)
    assert m["n_slates"] == 2.0
    assert m["new_n_slates"] == 1.0 and m["new_ndcg_at_10"] == 1.0
    # third slate: positive ranked 2nd of 3
    assert m["ndcg_at_10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    empty = evaluate(y, s, group, segments={"none": np.zeros(3, dtype=bool)})
    assert math.isnan(empty["none_ndcg_at_10"]) and empty["none_n_slates"] == 0.0


def test_roc_auc_is_global_and_undefined_for_one_class() -> None:
    y = np.array([0, 1, 0, 1], dtype=float)
    assert roc_auc(y, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0
    assert math.isnan(roc_auc(np.zeros(4), np.arange(4.0)))


def test_names_and_input_checks() -> None:
    assert metric_names() == [
        "ndcg_at_5",
        "ndcg_at_10",
        "map_at_10",
        "recall_at_5",
        "recall_at_10",
        "roc_auc",
        "n_slates",
    ]
    with pytest.raises(ValueError, match="differ"):
        evaluate(np.zeros(3), np.zeros(3), np.array([2]))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.zeros(2), np.array([0.0, np.nan]), np.array([2]))
