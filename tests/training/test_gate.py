"""The popularity gate: a paired bootstrap over slates, hand-checked; a model below popularity
is never promoted, the first promotion included, and the refusal says why."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import contract as c
from features import tracking
from tests.training.conftest import RUN_TIME
from training.config import TrainConfig
from training.gate import (
    GateResult,
    gate_refusal,
    paired_bootstrap,
    paired_difference,
    recorded_gate,
)
from training.promote import promote
from training.train import train

ONE_BELOW = 1 / math.log2(3)  # NDCG of a slate whose only positive sits second


def test_every_slate_better_by_the_same_amount_gives_a_point_interval() -> None:
    # three slates of two rows; the positive is the first row; a fourth slate has no positive
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0], dtype=float)
    model = np.array([2, 1, 2, 1, 2, 1, 2, 1], dtype=float)  # positive first
    reference = np.array([1, 2, 1, 2, 1, 2, 1, 2], dtype=float)  # positive second
    gate = paired_bootstrap(
        y, model, reference, np.array([2, 2, 2, 2]), baseline="popularity", samples=200, seed=0
    )
    assert gate.n_slates == 3  # the slate without a redemption carries no signal
    assert (gate.model, gate.reference) == pytest.approx((1.0, ONE_BELOW))
    assert gate.diff == gate.low == gate.high == pytest.approx(1 - ONE_BELOW)
    assert gate.passed


def test_a_model_as_often_worse_as_better_fails() -> None:
    n = 40
    y = np.tile([1.0, 0.0], n)
    first, second = [2.0, 1.0], [1.0, 2.0]  # the positive ranked first / second
    model = np.concatenate([first if i < n // 2 else second for i in range(n)])
    reference = np.concatenate([first if i % 2 == 0 else second for i in range(n)])
    gate = paired_bootstrap(
        y, model, reference, np.full(n, 2), baseline="popularity", samples=500, seed=1
    )
    assert gate.low < 0 < gate.high and not gate.passed
    refused = gate_refusal(gate)
    assert refused and "does not beat the popularity baseline on its 40 test slates" in refused
    assert f"{gate.low:+.4f} is not above 0" in refused


def test_paired_difference_exact_cases() -> None:
    # the one bootstrap of the gate and benchmarks/real_data.py, on per-unit values
    a = np.array([0.5, 0.7, np.nan, 0.2])
    b = np.array([0.4, 0.6, 0.9, 0.1])
    diff, lo, hi = paired_difference(a, b, samples=200, seed=1)  # the NaN unit leaves
    assert diff == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    x = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    diff, lo, hi = paired_difference(x, np.zeros(6), samples=2000, seed=0)
    assert diff == pytest.approx(0.5) and 0.0 <= lo < 0.5 < hi <= 1.0
    assert paired_difference(x, np.zeros(6), 500, 3) == paired_difference(x, np.zeros(6), 500, 3)
    assert all(np.isnan(paired_difference(np.array([np.nan]), np.zeros(1), 10, 0)))
    with pytest.raises(ValueError, match="shape"):
        paired_difference(x, np.zeros(5), 10, 0)


def test_the_gate_is_the_paired_difference_of_per_slate_ndcg() -> None:
    y = np.array([1, 0, 0, 1, 0, 1], dtype=float)
    model = np.array([2, 1, 1, 2, 2, 1], dtype=float)  # slates 1, 2 first; slate 3 second
    reference = np.array([1, 2, 2, 1, 1, 2], dtype=float)  # the mirror image
    gate = paired_bootstrap(
        y, model, reference, np.array([2, 2, 2]), baseline="popularity", samples=300, seed=4
    )
    per_model = np.array([1.0, 1.0, ONE_BELOW])
    per_reference = np.array([ONE_BELOW, ONE_BELOW, 1.0])
    assert (gate.diff, gate.low, gate.high) == pytest.approx(
        paired_difference(per_model, per_reference, 300, 4)
    )


def test_the_gate_travels_as_a_version_tag() -> None:
    gate = GateResult("popularity", 0.7, 0.6, 0.1, 0.05, 0.15, 180, 2000)
    assert recorded_gate({"gate_popularity": gate.to_tag()}) == gate
    assert recorded_gate({}) is None
    assert "trained before the gate" in (gate_refusal(None) or "")
    assert gate_refusal(gate) is None


@pytest.fixture(scope="module")
def merchant_only_labels(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic data with redemptions shuffled among each merchant's exposures: merchant
    rates stay (popularity keeps its signal), everything personal is gone."""
    out = tmp_path_factory.mktemp("shuffled") / "data"
    shutil.copytree(synth_dir, out)
    ex = pd.read_parquet(out / "exposures.parquet")
    offers = pd.read_parquet(out / "offers.parquet").set_index(c.OFFER_ID)
    merchant = offers.loc[ex[c.OFFER_ID], c.MERCHANT_ID].to_numpy()
    redeemed = ex[c.REDEEMED_AT].notna().to_numpy().copy()
    rng = np.random.default_rng(0)
    for m in np.unique(merchant):
        rows = np.flatnonzero(merchant == m)
        redeemed[rows] = rng.permutation(redeemed[rows])
    ex[c.REDEEMED_AT] = ex[c.SHOWN_AT].where(redeemed) + pd.Timedelta(minutes=1)
    ex.to_parquet(out / "exposures.parquet")
    return out


@pytest.mark.slow
def test_below_popularity_is_never_champion_not_even_the_first(
    home: Path, merchant_only_labels: Path
) -> None:
    config = TrainConfig(objectives="lambdarank", num_leaves=2, n_estimators=1)
    result = train(
        merchant_only_labels, home=home, erasures_dir=None, config=config, run_time=RUN_TIME
    )
    assert result.gate is not None and result.gate.low <= 0
    decision = promote(home=home, erasures_dir=None, config=config, run_time=RUN_TIME)
    assert not decision.promoted and decision.champion_version is None
    assert tracking.alias_version(home, tracking.CHAMPION) is None  # nothing is served
    text = decision.format()
    assert "KEPT: does not beat the popularity baseline" in text
    assert f"{result.gate.model:.4f} vs {result.gate.reference:.4f}" in text
    tags = tracking.version_info(home, result.version)["tags"]
    assert tags[tracking.TAG_PROMOTION] == "kept"
    assert recorded_gate(tags) == result.gate
