"""The report's numbers on hand-made logs: exact counts, lifts, SRM, IPS and SNIPS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from features.contract import (
    ARM,
    OFFER_ID,
    POSITION,
    PROPENSITY,
    REDEEMED_AT,
    SHOWN_AT,
    SLATE_ID,
    USER_ID,
)
from offers.experiments.analysis import (
    ReportError,
    arm_table,
    lift,
    off_policy,
    per_user,
    sample_ratio_mismatch,
)

T = pd.Timestamp("2025-06-10T12:00:00Z")


def log(rows: list[tuple]) -> pd.DataFrame:
    """(user, arm, slate, position, offer, propensity, redeemed) -> logged exposure rows."""
    frame = pd.DataFrame(
        rows, columns=[USER_ID, ARM, SLATE_ID, POSITION, OFFER_ID, PROPENSITY, "r"]
    )
    frame[SHOWN_AT] = T
    frame[REDEEMED_AT] = frame[SHOWN_AT].where(frame.pop("r").astype(bool))
    return frame


LOG = log(
    [
        ("a", "champion", "s1", 1, "o1", 0.9, 1),
        ("a", "champion", "s1", 2, "o2", 0.9, 0),
        ("a", "champion", "s2", 1, "o1", 0.9, 1),
        ("b", "champion", "s3", 1, "o3", 0.1, 0),
        ("c", "holdout", "s4", 1, "o1", 0.9, 0),
        ("c", "holdout", "s4", 2, "o2", 0.9, 1),
        ("d", "holdout", "s5", 1, "o2", 0.1, 0),
    ]
)


def test_per_user_and_per_arm_counts() -> None:
    users = per_user(LOG)
    assert users.to_dict("list") == {
        USER_ID: ["a", "b", "c", "d"],
        ARM: ["champion", "champion", "holdout", "holdout"],
        "slates": [2, 1, 1, 1],
        "exposures": [3, 1, 2, 1],
        "redemptions": [2, 0, 1, 0],
    }
    table = arm_table(users, ["champion", "challenger", "holdout"])
    assert table.loc["champion"].tolist() == [2, 3, 4, 2, 0.5, 1.0]
    assert table.loc["holdout"].tolist() == [2, 2, 3, 1, 1 / 3, 0.5]
    assert table.loc["challenger", "users"] == 0 and np.isnan(
        table.loc["challenger", "redemption_rate"]
    )


def test_a_user_in_two_arms_is_refused() -> None:
    bad = pd.concat([LOG, log([("a", "holdout", "s9", 1, "o1", 0.5, 0)])])
    with pytest.raises(ReportError, match=r"more than one arm: \['a'\]"):
        per_user(bad)


def test_lift_is_the_difference_of_means_with_a_user_bootstrap() -> None:
    users = per_user(LOG)
    rng = np.random.default_rng(0)
    per, incremental = lift(users, "champion", "holdout", rng, resamples=500)
    assert per.value == pytest.approx(1.0 - 0.5)
    assert incremental.value == pytest.approx(0.5 * 2)
    assert per.low <= per.value <= per.high and per.low < per.high
    assert (incremental.low, incremental.high) == pytest.approx((per.low * 2, per.high * 2))
    # users with equal outcomes within each arm: every resample gives the same difference
    flat = pd.DataFrame(
        {ARM: ["champion"] * 3 + ["holdout"] * 3, "redemptions": [2, 2, 2, 1, 1, 1]}
    )
    still, _ = lift(flat, "champion", "holdout", rng, resamples=100)
    assert (still.value, still.low, still.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ReportError, match="arm challenger has 0 users"):
        lift(users, "challenger", "holdout", rng)


def test_sample_ratio_mismatch_is_a_chi_square() -> None:
    users = pd.DataFrame({ARM: ["champion"] * 60 + ["holdout"] * 40})
    srm = sample_ratio_mismatch(users, {"champion": 0.5, "holdout": 0.5})
    assert srm["chi2"] == pytest.approx(4.0) and srm["df"] == 1
    assert srm["p_value"] == pytest.approx(chi2.sf(4.0, 1))
    fair = sample_ratio_mismatch(users, {"champion": 0.6, "holdout": 0.4})
    assert fair["chi2"] == 0 and fair["p_value"] == 1


def test_ips_and_snips_by_hand() -> None:
    """Candidate: s1 [o1, o9], s2 [o7, o1], s3 [o3], s4 [o1, o2], s5 [o5]."""
    rankings = {
        "s1": ["o1", "o9"],
        "s2": ["o7", "o1"],
        "s3": ["o3"],
        "s4": ["o1", "o2"],
        "s5": ["o5"],
    }
    out = off_policy(LOG, rankings, np.random.default_rng(0), resamples=200)
    # matches: s1@1 (y=1, p=.9), s3@1 (y=0, p=.1), s4@1 (y=0, p=.9), s4@2 (y=1, p=.9)
    assert out["ips"].value == pytest.approx((1 / 0.9 + 1 / 0.9) / 5)
    w1 = 1 / 0.9 + 1 / 0.1 + 1 / 0.9  # position 1: s1, s3, s4 match (5 slates have it)
    w2 = 1 / 0.9  # position 2: s4 matches (2 slates have it)
    assert out["snips"].value == pytest.approx((5 * (1 / 0.9) / w1 + 2 * (1 / 0.9) / w2) / 5)
    for e in out.values():
        assert e.low <= e.value <= e.high
    with pytest.raises(ReportError, match="no candidate ranking for logged slate 's5'"):
        off_policy(LOG, {k: v for k, v in rankings.items() if k != "s5"}, np.random.default_rng(0))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_ips_of_the_logged_slates_at_propensity_one_is_the_on_policy_mean(rows) -> None:
    """Metamorphic: a candidate that ranks exactly what was shown, logged with propensity 1,
    is valued at the logged redemptions per slate by both estimators."""
    frame = log(
        [(f"u{u}", "champion", f"s{i}", 1, f"o{i}", 1.0, int(r)) for i, (u, r) in enumerate(rows)]
    )
    rankings = {f"s{i}": [f"o{i}"] for i in range(len(rows))}
    out = off_policy(frame, rankings, np.random.default_rng(1), resamples=50)
    mean = np.mean([r for _, r in rows])
    assert out["ips"].value == pytest.approx(mean) and out["snips"].value == pytest.approx(mean)
